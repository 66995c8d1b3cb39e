"""The weak supervisor: a probe on the weak model's cached features, trained on `weak_train` gold.

Its soft predictions P_W(y=1|x) on `strong_train`, `val` and `test` are the weak labels. They are
returned as `Predictions` records keyed by id (role `weak`) and saved with the run, so every
student (probe, prompt, fine-tune) is trained and judged against the very same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit._util import ToolkitError
from toolkit.cache import Features
from toolkit.models import DEFAULT_WEAK
from toolkit.probe import LogisticProbe, fit_many
from toolkit.records import Predictions

LABEL_SPLITS = ("weak_train", "strong_train", "val", "test")


@dataclass(frozen=True)
class WeakConfig:
    """How the weak supervisor is built."""

    model: str = DEFAULT_WEAK
    """Weak model: catalog name, local folder or hub id."""
    layer: str = "last"
    """`last`, a layer number, or `cv` (5-fold cross-validation on weak_train gold picks the layer)."""
    C: float = 1.0
    """Inverse L2 strength of the weak probe (scikit-learn's meaning)."""


def choose_layer(feats: Features, ids, labels: np.ndarray, how: str, C: float, seed: int) -> int:
    """The weak probe's layer: `last`, an explicit number, or the best 5-fold CV accuracy on weak_train."""
    if how == "last":
        return feats.layers[-1]
    if how != "cv":
        try:
            layer = int(how)
        except ValueError:
            raise ToolkitError(f"weak layer must be `last`, `cv` or a number, got '{how}'") from None
        feats.layer(layer)  # raises if absent
        return layer
    X = feats.hidden[:, feats.index(ids)]  # (L, n, d)
    folds = np.random.default_rng(seed).permutation(len(ids)) % 5
    acc = np.zeros(len(feats.layers))
    for f in range(5):
        tr, te = folds != f, folds == f
        probes = fit_many(X[:, tr], np.broadcast_to(labels[tr], (len(X), tr.sum())), C=C)
        for li, probe in enumerate(probes):
            acc[li] += (probe.predict(X[li, te]) == labels[te]).mean() / 5
    return feats.layers[int(np.argmax(acc))]


def train_weak(feats: Features, splits, cfg: WeakConfig = WeakConfig(), *, seed: int = 0) -> list[Predictions]:
    """Fit the weak probe on `splits.weak_train` gold and predict every split.

    Returns one `Predictions` (role `weak`) per split in `LABEL_SPLITS`; `setting` names the layer."""
    train = splits.weak_train
    labels = np.asarray(train.labels)
    layer = choose_layer(feats, train.ids, labels, cfg.layer, cfg.C, seed)
    X = feats.layer(layer)
    probe = LogisticProbe(C=cfg.C).fit(X[feats.index(train.ids)], labels)
    out = []
    for name in LABEL_SPLITS:
        part = splits[name]
        p = probe.predict_proba(X[feats.index(part.ids)])[:, 1]
        out.append(Predictions(task=train.name, weak=cfg.model, strong=cfg.model, method="probe", role="weak",
                               loss="xent", setting=f"layer={layer}", seed=seed, split=name, ids=part.ids, p=p))
    return out


def as_soft_labels(weak: list[Predictions], split: str, ids) -> np.ndarray:
    """The weak supervisor's P(y=1) for `ids` of `split`, joined by id."""
    for rec in weak:
        if rec.split == split:
            return rec.aligned(ids)
    raise ToolkitError(f"no weak labels for split '{split}'")


@dataclass(frozen=True, eq=False)
class Supervision:
    """One seed's splits and the weak labels on them: what every student method starts from."""

    seed: int
    splits: object
    """`toolkit.tasks.Splits` of the task for this seed."""
    weak: list[Predictions]
    """The weak supervisor's records, one per split in `LABEL_SPLITS`."""

    def soft(self, split: str) -> np.ndarray:
        """Weak P(y=1) for the examples of `split`, in the split's id order."""
        return as_soft_labels(self.weak, split, self.splits[split].ids)


def supervise(task, seeds, sizes, cfg: WeakConfig = WeakConfig(), *, limit: int = 0, cache_dir=None,
              progress: bool = True) -> list[Supervision]:
    """Splits and weak labels for each seed in `seeds` (an int n means seeds 0..n-1).

    `task` is a loaded `Task` (already subsampled if wanted); the weak model's features are extracted
    once (or read from the cache) for the whole task. Deterministic: same inputs, same labels."""
    from toolkit import tasks
    from toolkit.extract import ExtractConfig, extract

    seeds = range(seeds) if isinstance(seeds, int) else seeds
    feats = extract(ExtractConfig(model=cfg.model, task=task.name, limit=limit, cache_dir=cache_dir),
                    progress=progress)
    out = []
    for seed in seeds:
        splits = tasks.split(task, seed, sizes)
        out.append(Supervision(seed, splits, train_weak(feats, splits, cfg, seed=seed)))
    return out
