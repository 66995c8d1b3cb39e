"""Bootstrapping (Burns et al. 2023, §4.3.1): supervise a strong model through a chain of intermediate models
instead of in one jump.

A chain `m0 > m1 > … > mK` starts from the weak supervisor m0 (trained on `weak_train` gold, as always) and
ends with the strong model mK. Each intermediate m1 … m(K−1) is a linear probe on its own cached features,
trained on the previous model's soft labels of `strong_train`, and its predictions become the next model's
labels. The last model is then trained by any method (probe, prompt, fine-tune) exactly as in the direct
comparison, only with the chain's labels.

Split scheme (no model labels the inputs it was trained on): each intermediate is **cross-fitted** on
`strong_train`. The examples are split into `folds` disjoint parts (by a seeded permutation); for each part a
probe is trained on the other parts' labels and labels that part. So every `strong_train` label an
intermediate hands on comes from a probe that never saw that example's incoming label. On `val` and `test`
the intermediate's label is the mean of its fold probes. Each fold probe selects its (layer, C) by agreement
with the incoming labels of `val` (never gold), as every student does; `val` is never trained on.

Records: an intermediate's predictions are `student` records of method `probe`, setting `crossfit`, with
`weak` m0, `chain` the intermediates before it ("" for m1, then `m1`, `m1>m2`, …) and `strong` the
intermediate; the final students carry `weak` m0 and `chain` every intermediate (`m1>m2`), so a summary shows
them beside the direct m0 students (chain ""). PGR is always measured against m0 and the same final ceiling. A
chain of length two is the direct comparison, record for record.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from toolkit import cache, linear, records
from toolkit._util import ToolkitError, rng, stable_hash
from toolkit.linear import DEFAULT_CS, fit_many, predict_proba_many
from toolkit.records import CHAIN_SEP, Predictions
from toolkit.weak import Supervision

__all__ = ["CHAIN_SEP", "fold_of", "relabel", "stored_relabel", "bootstrap"]

SPLITS = ("strong_train", "val", "test")
CROSSFIT = "crossfit"
FORMAT_VERSION = 1
FOLD_SALT = 0xB007  # `rng` salt of the cross-fitting folds
"""Part of every stored chain step's key: bump it with any change to `relabel` or `fold_of` that changes a
result."""
"""The setting of an intermediate's records (kept apart from the direct probe students' `select`)."""


def fold_of(n: int, seed: int, folds: int = 2) -> np.ndarray:
    """(n,) fold index of each strong_train example: a seeded permutation cut into `folds` near-equal parts."""
    if folds < 2:
        raise ToolkitError(f"cross-fitting needs folds >= 2, got {folds}")
    if n < 2 * folds:
        raise ToolkitError(f"strong_train has {n} examples: too few for {folds} folds")
    out = np.empty(n, dtype=np.int64)
    out[rng(seed, FOLD_SALT).permutation(n)] = np.arange(n) % folds
    return out


def relabel(feats, sup: Supervision, *, model: str, weak: str, chain: str = "", Cs=DEFAULT_CS,
            loss: str = "xent", folds: int = 2, fit: dict | None = None) -> tuple[Supervision, list[Predictions]]:
    """One bootstrapping step: cross-fitted probes on `feats` (the intermediate model's features) trained on
    `sup`'s labels. Returns the next step's `Supervision` (same splits, the intermediate's labels) and the
    intermediate's records (`student`, `weak`, `chain` the intermediates before it, strong=`model`, setting
    `crossfit`). `fit`: where and how
    the probes are fitted (`toolkit.weak.solver`)."""
    splits = sup.splits
    X = {s: feats.take(splits[s].ids) for s in SPLITS}  # (L, n, d) float32
    n_layers, n = X["strong_train"].shape[:2]
    w = sup.soft("strong_train")
    val_hard = sup.soft("val") > 0.5
    fold = fold_of(n, sup.seed, folds)
    p = {"strong_train": np.empty(n), "val": np.zeros(len(splits.val)), "test": np.zeros(len(splits.test))}
    chosen = []
    for f in range(folds):
        train = fold != f
        best = None
        for C in Cs:
            probes = fit_many(X["strong_train"][:, train], np.broadcast_to(w[train], (n_layers, int(train.sum()))),
                              C=C, loss=loss, **(fit or {}))
            agree = ((predict_proba_many(probes, X["val"])[..., 1] > 0.5) == val_hard).mean(1)
            li = int(np.argmax(agree))
            if best is None or agree[li] > best[0]:
                best = (agree[li], li, C, probes[li])
        _, li, C, probe = best
        chosen.append({"layer": int(feats.layers[li]), "C": float(C)})
        p["strong_train"][~train] = probe.predict_proba(X["strong_train"][li][~train])[:, 1]
        for s in ("val", "test"):
            p[s] += probe.predict_proba(X[s][li])[:, 1] / folds
    base = {"task": splits.test.name, "weak": weak, "chain": chain, "strong": model, "method": "probe",
            "role": "student", "loss": loss, "setting": CROSSFIT, "seed": sup.seed}
    extra = {"intermediate": 1, "folds": folds, "layers": [c["layer"] for c in chosen], "Cs": [c["C"] for c in chosen]}
    recs = [Predictions(**base, split=s, ids=splits[s].ids, p=np.clip(p[s], 0, 1), extra=extra) for s in SPLITS]
    weak = [r.with_(role="weak", extra={}) for r in recs]
    return replace(sup, weak=weak), recs


def stored_relabel(feats, sup: Supervision, *, model: str, weak: str, chain: str = "", Cs=DEFAULT_CS,
                   loss: str = "xent", folds: int = 2, cache_dir=None, fit: dict | None = None
                   ) -> tuple[Supervision, list[Predictions]]:
    """`relabel`, read from `<cache>/runs/chain/<key>.npz` when the same step was computed before. The key is
    content: the intermediate's feature entry, the split ids, the incoming labels (6 decimals), the settings
    and the format versions of this step and of the solver."""
    splits = sup.splits
    spec = {"features": feats.path.name, "seed": sup.seed, "Cs": list(Cs), "loss": loss, "folds": folds,
            "version": [FORMAT_VERSION, linear.SOLVER_VERSION],
            "ids": {s: stable_hash(list(splits[s].ids)) for s in SPLITS},
            "labels": {s: stable_hash(np.round(sup.soft(s), 6).tolist()) for s in SPLITS}}
    path = cache.run_path("chain", spec, cache_dir)
    names = {"task": splits.test.name, "weak": weak, "chain": chain, "strong": model}
    recs, _ = records.stored(path, lambda: relabel(feats, sup, model=model, weak=weak, chain=chain, Cs=Cs,
                                                   loss=loss, folds=folds, fit=fit)[1], what="chain store",
                             names=names)
    return replace(sup, weak=[r.with_(role="weak", extra={}) for r in recs]), recs


def bootstrap(sups: list[Supervision], intermediates: list[tuple[str, object]], *, first: str,
              Cs=DEFAULT_CS, loss: str = "xent", folds: int = 2, cache_dir=None,
              fit: dict | None = None) -> tuple[list[Supervision], list[Predictions], str]:
    """Run `sups` (the weak supervisor `first`'s) through `intermediates` [(name, Features), ...].

    Returns the final `Supervision`s (labels of the last intermediate), every intermediate record, and the
    `chain` to give the final students (the intermediates' names joined by `CHAIN_SEP`). With no intermediates,
    the input is returned unchanged and the chain is "". Each step is stored (`stored_relabel`) under
    `cache_dir`."""
    chain, recs, out = "", [], []
    for sup in sups:
        chain = ""
        for name, feats in intermediates:
            sup, r = stored_relabel(feats, sup, model=name, weak=first, chain=chain, Cs=Cs, loss=loss, folds=folds,
                                    cache_dir=cache_dir, fit=fit)
            recs += r
            chain = f"{chain}{CHAIN_SEP}{name}" if chain else name
        out.append(sup)
    return out, recs, chain


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
