"""The weak supervisor: a probe on the weak model's cached features, trained on `weak_train` gold.

Its soft predictions P_W(y=1|x) on `strong_train`, `val` and `test` are the weak labels. They are
returned as `Predictions` records keyed by id (role `weak`) and saved with the run, so every
student (probe, prompt, fine-tune) is trained and judged against the very same labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from toolkit import tasks
from toolkit._util import ToolkitError, rng
from toolkit.cache import Features
from toolkit.config import parse_seeds
from toolkit.extract import ExtractConfig, extract
from toolkit.linear import DEFAULT_CS, LogisticProbe, fit_many, predict_proba_many, resident
from toolkit.models import DEFAULT_WEAK, pick_device
from toolkit.records import Predictions

LABEL_SPLITS = ("weak_train", "strong_train", "val", "test")
NOISE_SALT = 0x6E6F697365  # `rng` salt of the random-noise control's flips


@dataclass(frozen=True)
class WeakConfig:
    """How the weak supervisor is built."""

    model: str = DEFAULT_WEAK
    """Weak model: catalog name, local folder or hub id (a probe on its cached features), or `tfidf`
    (bag of words, no neural model)."""
    layer: str = "last"
    """`last`, a layer number, or `cv` (5-fold cross-validation on weak_train gold picks the layer)."""
    Cs: tuple[float, ...] = DEFAULT_CS
    """Inverse L2 strengths tried (scikit-learn's meaning); 5-fold CV on weak_train gold picks one."""
    device: str = "auto"
    """Where the probes are fitted: `auto` (a GPU when there is one), `cpu` or `cuda`."""
    engine: str = "auto"
    """Probe solver engine (`toolkit.linear`): `auto` (numpy on a CPU, batched torch elsewhere), `numpy` or
    `torch`."""


def solver(device: str = "auto", engine: str = "auto") -> dict:
    """`LogisticProbe` parameters that place the fits: the device (`auto` resolved: a GPU when there is one)
    and the engine. A bad engine name fails here, before any work."""
    if engine not in ENGINES:
        raise ToolkitError(f"probe engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    return {"device": pick_device(device), "engine": engine}


ENGINES = ("auto", "numpy", "torch")


def cv_accuracy(X, labels: np.ndarray, C: float, seed: int, folds: int = 5,
                fit: dict | None = None) -> np.ndarray:
    """Mean `folds`-fold CV accuracy of a probe per layer of X (L, n, d: an array or `linear.Resident`) on gold
    `labels`; `fit`: `solver()`."""
    fold = rng(seed).permutation(len(labels)) % folds
    acc = np.zeros(len(X))
    for f in range(folds):
        tr, te = fold != f, fold == f
        probes = fit_many(X[:, tr], np.broadcast_to(labels[tr], (len(X), tr.sum())), C=C, **(fit or {}))
        acc += ((predict_proba_many(probes, X[:, te])[..., 1] > 0.5) == labels[te]).mean(1) / folds
    return acc


def choose(feats: Features, ids, labels: np.ndarray, cfg: WeakConfig, seed: int) -> tuple[int, float]:
    """The weak probe's (layer, C): the layer is `last`, a number, or `cv`; C is picked from `cfg.Cs`
    by 5-fold CV on weak_train gold (the only gold the weak supervisor may see)."""
    if cfg.layer in ("last", "cv"):
        layers = list(feats.layers) if cfg.layer == "cv" else [feats.layers[-1]]
    else:
        try:
            layers = [int(cfg.layer)]
        except ValueError:
            raise ToolkitError(f"weak layer must be `last`, `cv` or a number, got '{cfg.layer}'") from None
        feats.layer(layers[0])  # raises if absent
    rows = feats.index(ids)
    X = np.stack([feats.layer(li)[rows] for li in layers]).astype(np.float32, copy=False)  # only these rows
    labels = labels.astype(np.float64)
    fit = solver(cfg.device, cfg.engine)
    X = resident(X, fit["device"], fit["engine"])  # sent to the probe device once for every C and fold
    scores = np.stack([cv_accuracy(X, labels, C, seed, fit=fit) for C in cfg.Cs])  # (n_C, n_layers)
    ci, li = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return layers[li], float(cfg.Cs[ci])


def train_weak(feats: Features, splits, cfg: WeakConfig = WeakConfig(), *, seed: int = 0) -> list[Predictions]:
    """Fit the weak probe on `splits.weak_train` gold and predict every split.

    Returns one `Predictions` (role `weak`) per split in `LABEL_SPLITS`; `setting` names the layer."""
    train = splits.weak_train
    labels = np.asarray(train.labels)
    layer, C = choose(feats, train.ids, labels, cfg, seed)
    X = feats.layer(layer)
    probe = LogisticProbe(C=C, **solver(cfg.device, cfg.engine)).fit(X[feats.index(train.ids)], labels)
    out = []
    for name in LABEL_SPLITS:
        part = splits[name]
        p = probe.predict_proba(X[feats.index(part.ids)])[:, 1]
        out.append(Predictions(task=train.name, weak=cfg.model, strong=cfg.model, method="probe", role="weak",
                               loss="xent", setting=f"layer={layer}", seed=seed, split=name, ids=part.ids, p=p,
                               extra={"layer": layer, "C": C}))
    return out


def noise_labels(y, weak_p, seed: int, *, per_class: bool = False) -> np.ndarray:
    """Gold labels with random flips at the supervisor's error count: the training labels of the random-noise
    control. y: (n,) gold 0/1; weak_p: (n,) the supervisor's P(y=1) on the same examples.

    Let k = #(weak_p > 0.5 != y). Exactly k examples, drawn uniformly without replacement, get their label
    flipped. With `per_class`, within each gold class c exactly k_c = #(errors with y == c) of that class's
    examples are flipped (the supervisor's per-class error rates, hence its label prior, are kept).
    Deterministic in `seed`. Returns (n,) int64 in {0, 1}."""
    y = np.asarray(y)
    weak_p = np.asarray(weak_p, dtype=np.float64)
    if y.shape != weak_p.shape:
        raise ToolkitError(f"noise_labels: {len(y)} labels but {len(weak_p)} weak predictions")
    if not np.isin(y, (0, 1)).all():
        raise ToolkitError("noise_labels: y must be 0/1")
    y = y.astype(np.int64)
    wrong = (weak_p > 0.5) != (y == 1)
    draw = rng(seed, NOISE_SALT)
    groups = [np.flatnonzero(y == c) for c in (0, 1)] if per_class else [np.arange(len(y))]
    out = y.copy()
    for g in groups:
        flip = draw.choice(g, int(wrong[g].sum()), replace=False)
        out[flip] = 1 - out[flip]
    return out


TFIDF = "tfidf"
"""The cheapest weak supervisor: TF-IDF features of the text (word 1-2-grams) and an L2 logistic regression."""


def train_tfidf(splits, cfg: WeakConfig = WeakConfig(TFIDF), *, seed: int = 0) -> list[Predictions]:
    """The bag-of-words weak supervisor: scikit-learn TfidfVectorizer (fitted on weak_train only) and
    LogisticRegression, C chosen from `cfg.Cs` x 100 (TF-IDF rows are unit-norm, so useful C is larger than on
    standardised features) by 5-fold CV accuracy on weak_train gold. Records as `train_weak`'s."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    train = splits.weak_train
    labels = np.asarray(train.labels)
    make = lambda C: make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
                                   LogisticRegression(C=C, max_iter=1000))
    Cs = [100 * c for c in cfg.Cs]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = [cross_val_score(make(C), train.texts, labels, cv=folds).mean() for C in Cs]
    C = float(Cs[int(np.argmax(scores))])
    model = make(C).fit(train.texts, labels)
    return [Predictions(task=train.name, weak=cfg.model, strong=cfg.model, method="tfidf", role="weak", loss="xent",
                        setting="tfidf", seed=seed, split=name, ids=splits[name].ids,
                        p=model.predict_proba(splits[name].texts)[:, 1], extra={"C": C})
            for name in LABEL_SPLITS]


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

    def noisy(self, split: str, *, per_class: bool = False) -> np.ndarray:
        """The random-noise control's labels for `split`: its gold flipped at random at the supervisor's
        error count on that split (see `noise_labels`), in the split's id order."""
        salt = LABEL_SPLITS.index(split)
        return noise_labels(self.splits[split].labels, self.soft(split), self.seed * 4 + salt, per_class=per_class)


def supervise(task, seeds, sizes, cfg: WeakConfig = WeakConfig(), *, limit: int = 0, cache_dir=None,
              progress: bool = True) -> list[Supervision]:
    """Splits and weak labels for each seed in `seeds` (an int n means seeds 0..n-1).

    `task` is a loaded `Task` (already subsampled if wanted); the weak model's features are extracted
    once (or read from the cache) for the whole task. Deterministic: same inputs, same labels."""
    seeds = check_seeds(seeds)
    check_sizes(sizes, cfg.model)
    # Every split is drawn before any model runs: a task too small for the sizes fails in a second.
    all_splits = [tasks.split(task, seed, sizes) for seed in seeds]
    if cfg.model == TFIDF:
        train = lambda splits, seed: train_tfidf(splits, cfg, seed=seed)
    else:
        feats = extract(ExtractConfig(model=cfg.model, task=task.name, limit=limit, device=cfg.device,
                                      cache_dir=cache_dir),
                        progress=progress)
        train = lambda splits, seed: train_weak(feats, splits, cfg, seed=seed)
    return [Supervision(seed, splits, train(splits, seed)) for seed, splits in zip(seeds, all_splits)]


class Supervisor:
    """How a comparison's weak supervisor is built from each seed's weak_train gold (`--weak-method`): one
    subclass per way, registered by name (`register_supervisor`); the comparison calls `supervise` and never
    branches on the name. Built in: `probe` and `tfidf` here, `finetune` in `toolkit.finetune`."""

    name: ClassVar[str]
    how: ClassVar[str]
    """How report.md says it supervises."""
    stored: ClassVar[bool] = False
    """Its labels are trained and stored per seed (a fine-tuned supervisor), so a sweep gives each seed a job of
    its own before the methods that read them; a probe's are refitted wherever they are needed (seconds)."""

    def supervise(self, task, task_spec: str, job, options: dict, progress: bool = True) -> list[Supervision]:
        """Each seed of `job` (a `config.JobConfig` resolved for `task`): its splits and weak labels. `options`
        are the comparison's method options by method name (a supervisor that trains like a method reads its
        options there)."""
        raise NotImplementedError

    def describe(self, job, options: dict, sizes: dict) -> list[str]:
        """Sentences for report.md on how it was built here (`sizes`: model -> parameters); none by default."""
        return []

    def check(self, job) -> None:
        """Raise a one-line `ToolkitError` for a job this supervisor cannot build, before any long work."""


SUPERVISORS: dict[str, Supervisor] = {}


def register_supervisor(cls: type[Supervisor]) -> type[Supervisor]:
    """Class decorator: register a `Supervisor` under its `name`."""
    SUPERVISORS[cls.name] = cls()
    return cls


def supervisor(name: str) -> Supervisor:
    """The registered supervisor `name` (`finetune`'s registers when `toolkit.finetune` is imported, as
    `toolkit.compare` does)."""
    if name not in SUPERVISORS:
        raise ToolkitError(f"unknown weak method '{name}': choose from {', '.join(SUPERVISORS)}")
    return SUPERVISORS[name]


@register_supervisor
class ProbeSupervisor(Supervisor):
    name, how = "probe", "a probe on its features, trained on weak_train gold"

    def config(self, job) -> WeakConfig:
        return WeakConfig(job.weak, job.weak_layer, device=job.device, engine=job.probe_engine)

    def supervise(self, task, task_spec, job, options, progress=True):
        return supervise(task, job.seeds, job.sizes, self.config(job), limit=job.subsample,
                         cache_dir=job.cache_dir, progress=progress)


@register_supervisor
class TfidfSupervisor(ProbeSupervisor):
    name, how = TFIDF, "bag of words"

    def config(self, job) -> WeakConfig:
        return WeakConfig(TFIDF)


def check_seeds(seeds) -> list[int]:
    """`seeds` as a list (`config.parse_seeds`: an int n means 0..n-1; at least one, distinct, none negative)."""
    return list(parse_seeds(seeds))


MIN_WEAK_TRAIN = {"probe": 6, TFIDF: 10}
"""The weak supervisor picks its C by 5-fold CV on weak_train. A feature probe's folds are a seeded permutation
cut in 5: from 6 examples no fold is empty and every training part holds both classes. tfidf's folds are
stratified: 5 examples of each class."""


def check_sizes(sizes, weak: str = "probe") -> None:
    """Split sizes every method can use with the weak supervisor `weak` (a model name or `tfidf`): each split
    holds both classes, and weak_train is large enough for the weak supervisor's cross-validation."""
    small = [f"{name}={n}" for name, n in sizes.counts().items() if n < 2]
    if small:
        raise ToolkitError(f"split sizes {', '.join(small)} are too small: every split needs at least one example "
                           "of each label (size >= 2)")
    need = MIN_WEAK_TRAIN[TFIDF if weak == TFIDF else "probe"]
    if sizes.weak_train < need:
        raise ToolkitError(f"weak_train={sizes.weak_train} is too small: the weak supervisor ({weak}) chooses its C "
                           f"by 5-fold cross-validation on it and needs weak_train >= {need}")


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
