"""Label-free elicitation, the part such methods share: one direction per layer of the strong model's hidden
states, found without any label, made into records the way every student here is made.

A method subclasses `DirectionMethod`, registers itself, and says how it finds its directions on strong_train
(`scores`): on the plain features, or on contrast pairs (`contrast = True`: the task's prompt completed with
each of its two label words, twice the tokens of a plain extraction, cached like any entry; the key names the
completion). No gold label is seen in training or in selection:
- a direction's raw score has no sign and no scale: a one-feature logistic fit (Platt scaling) on val's *weak*
  labels gives both, per layer, so the sign is the one that agrees with the weak supervisor (never
  max(acc, 1 - acc) on test, which peeks at gold);
- the layer is chosen by accuracy against val's hard weak labels, as the probe students' is;
- the ceiling is the probe method's gold ceiling on the plain features (`probe.ceiling_records`), so a label-free
  row's PGR says how much of the supervised probe's gap over the weak supervisor it recovers without labels.
Each seed's records are kept in the run store under the method's name, keyed by content.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace
from typing import ClassVar

import numpy as np

from toolkit import cache, linear, records
from toolkit._util import stable_hash
from toolkit.extract import ExtractConfig, for_job, held
from toolkit.methods import Context, Method, MethodResult
from toolkit.probe import STUDENT_SPLITS, ProbeOptions, ceiling_records, layer_records
from toolkit.records import Predictions
from toolkit.weak import Supervision, solver

__all__ = ["DirectionMethod", "contrast_configs", "platt", "projections", "select_layer"]

FORMAT_VERSION = 1
"""Part of every stored label-free fit's key; bump it with any change to what a hit returns."""

PLATT_RIDGE = 1e-3
"""L2 on the Platt slope (per example): keeps it finite where the weak labels of val are separable."""


def contrast_configs(ex: ExtractConfig, task) -> tuple[ExtractConfig, ExtractConfig]:
    """The two contrast-pair extractions of `ex`: the task's template completed with the label word of class 0,
    then of class 1 (the last token, where a decoder's features are pooled, is the word's)."""
    return tuple(replace(ex, template=task.template + word) for word in task.label_words)


def platt(scores: np.ndarray, targets: np.ndarray, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Per-row logistic fit of soft `targets` (n,) on `scores` (L, n), standardised: returns (slope, intercept),
    each (L,), of logit P(y=1) = slope * z + intercept, z = (score - mean) / std of the row. Newton's method on
    the mean cross-entropy plus `PLATT_RIDGE` * slope^2 / 2, steps clipped so that it cannot overshoot."""
    z = _standardise(scores, scores)
    t = np.asarray(targets, dtype=np.float64)
    a, b = np.zeros(len(z)), np.zeros(len(z))
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a[:, None] * z + b[:, None])))
        w, r = p * (1 - p), p - t
        ga, gb = (r * z).mean(1) + PLATT_RIDGE * a, r.mean(1)
        haa, hab, hbb = (w * z * z).mean(1) + PLATT_RIDGE, (w * z).mean(1), w.mean(1) + 1e-12
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        step = np.maximum(1.0, np.hypot(da, db) / 5.0)
        a, b = a - da / step, b - db / step
    return a, b


def _standardise(scores: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`scores` (L, n) centred and scaled by the mean and std of `ref` (L, m), row by row."""
    ref = np.asarray(ref, dtype=np.float64)
    return (np.asarray(scores, dtype=np.float64) - ref.mean(1, keepdims=True)) / (ref.std(1, keepdims=True) + 1e-12)


def calibrated(raw: dict[str, np.ndarray], weak_val: np.ndarray) -> dict[str, np.ndarray]:
    """P(y=1) per split (L, n) from raw direction scores: Platt-scaled on val's weak labels, layer by layer."""
    a, b = platt(raw["val"], weak_val)
    return {s: 1 / (1 + np.exp(-(a[:, None] * _standardise(v, raw["val"]) + b[:, None]))) for s, v in raw.items()}


def projections(train: np.ndarray, evals: dict, W: np.ndarray) -> dict[str, np.ndarray]:
    """Scores (L, n) per split: each split's plain features, centred by strong_train's mean, on directions W (L, d)."""
    mean = train.astype(np.float64).mean(1, keepdims=True)
    return {s: np.einsum("lnd,ld->ln", X - mean, W) for s, X in evals.items()}


def select_layer(p_val: np.ndarray, weak_val: np.ndarray) -> int:
    """The layer whose val predictions agree best with the hard weak labels (ties: the lower layer)."""
    return int(np.argmax(((p_val > 0.5) == (np.asarray(weak_val) > 0.5)).mean(1)))


class DirectionMethod(Method):
    """A label-free method: subclass it, set `name`, `Options` and `contrast`, implement `scores`, register."""

    label_free = True
    contrast: ClassVar[bool] = False
    """Whether `scores` takes contrast pairs (two extractions) instead of the plain features."""
    loss_label: ClassVar[str] = "none"
    """The records' `loss` column: the method trains no student on a loss of `toolkit.losses`."""

    def scores(self, train, evals: dict, opts, seed: int, device: str) -> dict[str, np.ndarray]:
        """Raw scores (L, n) per split of `evals` (split -> features), from directions found on `train` alone
        (no label). Features are (L, n, d) float32 arrays; with `contrast`, (class-0, class-1) pairs of them."""
        raise NotImplementedError

    def configs(self, ctx: Context) -> dict[str, ExtractConfig]:
        """The extractions this method reads: `plain` (the ceiling's, and the directions' unless `contrast`),
        `neg` and `pos` (the contrast pairs)."""
        ex = for_job(ctx.job, ctx.strong, ctx.task_spec)
        if not self.contrast:
            return {"plain": ex}
        neg, pos = contrast_configs(ex, ctx.task)
        return {"plain": ex, "neg": neg, "pos": pos}

    def _features(self, ctx: Context) -> dict:
        """The entries of `configs`, loaded once for `prepare`, `run` and the probes (`extract.held`)."""
        return {k: held(ex, ctx.task, progress=ctx.progress) for k, ex in self.configs(ctx).items()}

    def prepare(self, ctx: Context, opts) -> str:
        self._features(ctx)
        return f"extract {ctx.task.name} {ctx.strong}{' (contrast pairs)' if self.contrast else ''}"

    def run(self, ctx: Context, opts) -> MethodResult:
        feats = self._features(ctx)
        out, fitted = [], 0
        for sup in ctx.sups:
            t0 = time.perf_counter()
            recs, loaded = self._stored(ctx, feats, sup, opts)
            out += recs
            fitted += not loaded
            if ctx.progress:
                print(f"[{self.name}] seed {sup.seed}: {len(feats['plain'].layers)} layers + ceiling: "
                      f"{'loaded' if loaded else 'fitted'} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                      flush=True)
        return MethodResult(out, computed={f"{self.name}_seeds_fitted": fitted})

    def _stored(self, ctx: Context, feats: dict, sup: Supervision, opts) -> tuple[list[Predictions], bool]:
        splits = sup.splits
        spec = {"method": self.name, "features": {k: f.path.name for k, f in feats.items()}, "seed": sup.seed,
                "version": [FORMAT_VERSION, linear.SOLVER_VERSION],
                "ids": {s: stable_hash(list(splits[s].ids), 16) for s in STUDENT_SPLITS},
                # 6 decimals, as the probe store: thread counts change the last bits of the weak labels
                "weak": stable_hash(np.round(sup.soft("val"), 6).tolist(), 16),
                "gold": stable_hash(splits.strong_train.labels.tolist(), 16), "opts": asdict(opts)}
        path = cache.run_path(self.name, spec, ctx.job.cache_dir)
        names = {"weak": ctx.weak, "strong": ctx.strong, "task": splits.test.name}
        return records.stored(path, lambda: self.fit_seed(ctx, feats, sup, opts), what=f"{self.name} run store",
                              names=names)

    def fit_seed(self, ctx: Context, feats: dict, sup: Supervision, opts) -> list[Predictions]:
        """One seed's students (every layer and the selected one) and the gold probe ceiling."""
        splits = sup.splits
        ids = {s: splits[s].ids for s in STUDENT_SPLITS}
        fit = solver(ctx.job.device, ctx.job.probe_engine)
        if self.contrast:
            take = {s: (feats["neg"].take(ids[s]), feats["pos"].take(ids[s])) for s in STUDENT_SPLITS}
        else:
            take = {s: feats["plain"].take(ids[s]) for s in STUDENT_SPLITS}
        raw = self.scores(take["strong_train"], take, opts, sup.seed, fit["device"])
        weak_val = sup.soft("val")
        p = calibrated(raw, weak_val)
        chosen = select_layer(p["val"], weak_val)
        layers = feats["plain"].layers
        key = {"task": splits.test.name, "weak": ctx.weak, "strong": ctx.strong, "method": self.name,
               "seed": sup.seed}
        out = layer_records(key, layers, p, ids, "student", self.loss_label, chosen, {"sign_layer": "weak val"})
        X = {s: linear.resident(feats["plain"].take(ids[s]), fit["device"], fit["engine"]) for s in STUDENT_SPLITS}
        return out + ceiling_records(X, key, layers, splits, ProbeOptions().Cs, sup.seed, fit)  # the probe's own C grid

    def estimate(self, opts, work) -> dict[str, float]:
        # stage names shared with the probe's: the plain entry is one extraction for both
        once = work.forward(work.n_examples)
        return {"extraction": once, "contrast pairs": 2 * once} if self.contrast else {"extraction": once}

    def describe(self, opts, job, sizes) -> list[str]:
        pairs = " on contrast pairs (the prompt completed with each label word)" if self.contrast else ""
        return [f"`{self.name}` finds one direction per layer without labels{pairs}; its sign and scale are fitted "
                "on val's weak labels and its layer chosen by agreement with them; its ceiling is the gold "
                "probe's (with the probe method's default C grid)."]
