"""The probe path of the side-by-side comparison: weak supervisor, probe students (one per loss),
probe ceiling (gold), every layer, on the same splits — from cached features only.

    python -m toolkit.probe --task sentiment --weak minilm-l6 --strong smollm2-135m --seeds 5 --out runs/probe

(the comparison with the probe alone: `python -m toolkit.compare --methods probe` takes the same options.)

`LogisticProbe` and `fit_many` (the estimator) live in `toolkit.linear` and are re-exported here.
Model selection never sees gold outside the training set: a student's layer is chosen by accuracy
against the *weak* labels of `val`; the ceiling's by 3-fold cross-validation on `strong_train` gold
(the gold it is trained on anyway). Every layer's result is reported as well (`setting=layer=K`;
layer 0, the input embeddings, is the sanity baseline), and the chosen one as `setting=select`
with its layer in the `layer` metric row.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from toolkit import cache, linear, records
from toolkit._util import ToolkitError, stable_hash
from toolkit.config import as_numbers, flag, floats
from toolkit.extract import for_job, held
from toolkit.linear import DEFAULT_CS, LogisticProbe, fit_many, predict_proba_many
from toolkit.losses import parse as parse_loss
from toolkit.methods import Context, Method, MethodResult, register
from toolkit.records import Predictions
from toolkit.weak import Supervision, cv_accuracy, solver

__all__ = ["LogisticProbe", "ProbeOptions", "fit_many", "predict_proba_many", "probe_students", "stored_students"]

STUDENT_SPLITS = ("strong_train", "val", "test")


def layer_records(base: dict, layers, p: dict[str, np.ndarray], ids: dict, role: str, loss: str,
                  chosen: int, extra: dict) -> list[Predictions]:
    """Per-layer records (val, test) and the chosen layer's `select` records (strong_train, val, test); `p`:
    split -> (L, n) P(y=1); `extra` goes into every record (the probes' chosen C)."""
    out = []
    for li, layer in enumerate(layers):
        for split in ("val", "test"):
            out.append(Predictions(**base, role=role, loss=loss, setting=f"layer={layer}", split=split,
                                   ids=ids[split], p=p[split][li], extra=dict(extra), params={"layer": layer}))
    for split in STUDENT_SPLITS:
        out.append(Predictions(**base, role=role, loss=loss, setting="select", split=split, ids=ids[split],
                               p=p[split][chosen], extra={"layer": layers[chosen], **extra}))
    return out


def _predict(probes, X: dict) -> dict[str, np.ndarray]:
    return {split: predict_proba_many(probes, X[split])[..., 1] for split in X}


def _best(scores: list[np.ndarray]) -> tuple[int, int]:
    """(C index, layer index) of the best score; ties go to the stronger regularisation, then the lower layer."""
    ci, li = np.unravel_index(int(np.argmax(np.stack(scores))), (len(scores), len(scores[0])))
    return int(ci), int(li)


def _fit_select(X: dict, base: dict, layers, role: str, loss: str, train: np.ndarray, val: np.ndarray,
                Cs, fit: dict) -> list[Predictions]:
    """Probes on every layer x C trained on `train` targets; (C, layer) chosen by accuracy against the hard
    `val` labels the same supervision gives (never gold, unless the supervision is gold)."""
    n_layers, n = X["strong_train"].shape[:2]
    name, params = parse_loss(loss)  # records keep the whole spec (`logconf:alpha=0.75`) as their loss
    preds = [_predict(fit_many(X["strong_train"], np.broadcast_to(train, (n_layers, n)), C=C, loss=name,
                               loss_params=params or None, **fit), X) for C in Cs]
    ci, li = _best([((p["val"] > 0.5) == val).mean(1) for p in preds])
    ids = {s: base["ids"][s] for s in STUDENT_SPLITS}
    return layer_records(base["key"], layers, preds[ci], ids, role, loss, li, {"C": Cs[ci]})


def probe_students(feats, sup: Supervision, opts: ProbeOptions, losses: tuple[str, ...], fit: dict,
                   names: dict) -> list[Predictions]:
    """Students (one per loss of `losses`), their random-noise controls and the ceiling, fitted on every layer x C
    of the strong features at once; `fit` places the fits (`weak.solver`), `names` are the records' weak and
    strong models."""
    splits, seed = sup.splits, sup.seed
    ids = {s: splits[s].ids for s in STUDENT_SPLITS}
    # (L, n, d) float32, on the probe device once for every layer, C, loss and fold (`linear.Resident`)
    X = {s: linear.resident(feats.take(ids[s]), fit["device"], fit["engine"]) for s in STUDENT_SPLITS}
    base = {"ids": ids, "key": {"task": splits.test.name, "weak": names["weak"], "strong": names["strong"],
                                "method": "probe", "seed": seed}}
    noisy = {s: sup.noisy(s, per_class=opts.control_per_class).astype(np.float64) for s in ("strong_train", "val")}
    out = []
    for loss in losses:
        out += _fit_select(X, base, feats.layers, "student", loss, sup.soft("strong_train"),
                           sup.soft("val") > 0.5, opts.Cs, fit)  # weak labels only: no gold
        if opts.control:
            out += _fit_select(X, base, feats.layers, "control", loss, noisy["strong_train"], noisy["val"] > 0.5,
                               opts.Cs, fit)
    return out + ceiling_records(X, base["key"], feats.layers, splits, opts.Cs, seed, fit)


def ceiling_records(X: dict, key: dict, layers, splits, Cs, seed: int, fit: dict) -> list[Predictions]:
    """The gold ceiling: probes on every layer trained on strong_train gold, (C, layer) chosen by 3-fold CV on
    that gold. `X`: split -> (L, n, d) features (`linear.resident`) of `STUDENT_SPLITS`; `key`: the records'
    task, models, method and seed. The label-free methods take it as their ceiling too."""
    gold = np.asarray(splits.strong_train.labels, dtype=np.float64)
    n_layers, n = X["strong_train"].shape[:2]
    ci, li = _best([cv_accuracy(X["strong_train"], gold, C, seed, folds=3, fit=fit) for C in Cs])
    probes = fit_many(X["strong_train"], np.broadcast_to(gold, (n_layers, n)), C=Cs[ci], **fit)
    ids = {s: splits[s].ids for s in STUDENT_SPLITS}
    return layer_records(key, layers, _predict(probes, X), ids, "ceiling", "xent", li, {"C": Cs[ci]})


SECONDS_PER_SEED = 20.0
"""A seed of the default probe grid, for the start-of-run estimate: 13 s (Zen 4) to 18 s (Zen 2) measured."""
MIN_CEILING_TRAIN = 6  # 3-fold CV on strong_train gold: each fold's training part then holds both classes


def fit_seeds(feats, ctx: Context, opts: ProbeOptions) -> tuple[list[Predictions], int]:
    """Every seed of `ctx`: its students, controls and ceiling (`stored_students`); returns them and how many
    seeds were fitted rather than loaded."""
    out, fitted = [], 0
    fit = solver(ctx.job.device, ctx.job.probe_engine)
    for s in ctx.sups:
        t0 = time.perf_counter()
        recs, loaded = stored_students(feats, s, opts, ctx.losses, fit, {"weak": ctx.weak, "strong": ctx.strong},
                                       ctx.job.cache_dir)
        out += recs
        fitted += not loaded
        if ctx.progress:
            print(f"[probe] seed {s.seed}: {len(feats.layers)} layers x {len(opts.Cs)} C x "
                  f"{len(ctx.losses)} losses{' + controls' if opts.control else ''} + ceiling: "
                  f"{'loaded' if loaded else 'fitted'} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                  flush=True)
    return out, fitted


FORMAT_VERSION = 3
"""Part of every stored probe fit's key. Bump it with any change to the solver, the losses, the selection or
the records that changes what a hit returns (1 hashed the source text instead, so that a docstring edit dropped
every fit; 3: per-layer records carry `params={"layer": K}`)."""


def stored_students(feats, sup: Supervision, opts: ProbeOptions, losses: tuple[str, ...], fit: dict, names: dict,
                    cache_dir=None) -> tuple[list[Predictions], bool]:
    """`probe_students`, read from `<cache>/runs/probe/<key>.npz` when the same fit was done before.

    The key is content: the strong features' cache entry, the seed's split ids, the weak labels of
    strong_train and val, the gold that the ceiling and the control see, every setting that changes a fit,
    and `FORMAT_VERSION`. Model names are labels, so stored records are relabelled with this call's. Returns the
    records and whether they were loaded."""
    splits = sup.splits
    spec = {"features": feats.path.name, "seed": sup.seed, "version": [FORMAT_VERSION, linear.SOLVER_VERSION],
            "ids": {s: stable_hash(list(splits[s].ids), 16) for s in STUDENT_SPLITS},
            # 6 decimals: thread count changes float sums in the last bits, which must not miss the store
            "weak": {s: stable_hash(np.round(sup.soft(s), 6).tolist(), 16) for s in ("strong_train", "val")},
            "gold": {s: stable_hash(splits[s].labels.tolist(), 16) for s in ("strong_train", "val")},
            "cfg": {"losses": tuple(losses), "Cs": opts.Cs, "control": opts.control,
                    "control_per_class": opts.control_per_class}}
    path = cache.run_path("probe", spec, cache_dir)
    return records.stored(path, lambda: probe_students(feats, sup, opts, losses, fit, names), what="probe run store",
                          names={**names, "task": splits.test.name})


SUMMARY_SETTINGS = ("select",)  # the chosen layer
BASELINE_SETTINGS = ("layer=0",)  # the input-embedding sanity baseline: its own table, not a method's row


@dataclass(frozen=True)
class ProbeOptions:
    """Linear probes on the strong model's cached hidden states, one per layer."""

    Cs: tuple[float, ...] = floats(DEFAULT_CS, what="Cs")
    """Inverse L2 strengths tried for the strong probes (scikit-learn's meaning, standardised features):
    students pick (layer, C) by weak-label accuracy on val, the ceiling by 3-fold CV on its gold."""
    control: bool = flag(True)
    """Train the random-noise control of each probe student (gold flipped at the supervisor's error count)."""
    control_per_class: bool = flag(False)
    """Match the supervisor's error count within each gold class (instead of overall) for the control."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "Cs", as_numbers(self.Cs, float, "Cs"))


@register
class ProbeMethod(Method):
    """Probes on every layer x C at once; a student's (layer, C) is chosen by weak-label accuracy on val."""

    name = "probe"
    order = 0
    Options = ProbeOptions
    plan_stage = "probes"

    def check(self, job, opts, losses) -> None:
        for spec in losses:
            parse_loss(spec)
        if job.sizes is not None and job.sizes.strong_train < MIN_CEILING_TRAIN:
            raise ToolkitError(f"strong_train={job.sizes.strong_train} is too small: the probe ceiling chooses its C "
                               f"by 3-fold cross-validation on it and needs strong_train >= {MIN_CEILING_TRAIN}")

    def _features(self, ctx: Context):
        """The strong model's features, loaded once for `prepare` and every phase's `run` (`extract.held`)."""
        return held(for_job(ctx.job, ctx.strong, ctx.task_spec), ctx.task, progress=ctx.progress)

    def prepare(self, ctx: Context, opts) -> str:
        self._features(ctx)  # timed apart from the fits, so that seed 0's probe time (and the ETA) is fitting only
        return f"extract {ctx.task.name} {ctx.strong}"

    def run(self, ctx: Context, opts: ProbeOptions) -> MethodResult:
        recs, fitted = fit_seeds(self._features(ctx), ctx, opts)
        return MethodResult(recs, computed={"probe_seeds_fitted": fitted})

    def estimate(self, opts, work) -> dict[str, float]:
        return {"extraction": work.forward(work.n_examples), "probes": SECONDS_PER_SEED * work.seeds}

    def summary_settings(self, opts) -> tuple[str, ...]:
        return SUMMARY_SETTINGS

    def baseline_settings(self, opts) -> tuple[str, ...]:
        return BASELINE_SETTINGS


if __name__ == "__main__":
    # the comparison with this method alone: `toolkit.compare` is the composition root, imported by the command
    from toolkit.compare import method_main

    raise SystemExit(method_main(ProbeMethod.name))
