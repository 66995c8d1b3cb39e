"""The one results schema every method writes.

A `Predictions` record holds one model's P(y=1) for the examples of one split, keyed by id, with
what produced it (task, weak and strong model, method, role, loss, setting, seed). `score` turns
records into tidy rows (one per metric) with the columns of `ROW_COLUMNS`; probes, prompting and
fine-tuning all produce the same rows, so one table compares them. Diagnostics are pure functions
over records and never touch a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import cache, metrics
from toolkit._util import ToolkitError, atomic_write_bytes

ROW_COLUMNS = ["task", "weak", "chain", "strong", "method", "role", "loss", "setting", "seed", "split", "metric",
               "value"]
ROLES = ("weak", "student", "ceiling", "baseline", "control")
CHAIN_SEP = ">"
"""Joins the intermediates of a bootstrapping chain in the `chain` field: `smollm2-135m>gemma3-270m`."""


@dataclass(frozen=True, eq=False)
class Predictions:
    """P(y=1) of one model on one split, keyed by example id."""

    task: str
    weak: str
    """Weak supervisor's model name: the root of a bootstrapping chain, whose PGR every student is measured
    against."""
    strong: str
    """Strong model's name (the weak model's name for role `weak`)."""
    method: str
    """`probe`, `prompt`, `finetune`, or the weak supervisor's method."""
    role: str
    """`weak` (the supervisor), `student` (trained on weak labels), `ceiling` (trained on gold), `baseline`
    (no training signal, e.g. zero-shot), `control` (trained on gold flipped at random at the supervisor's error
    rate: the random-noise control of a student)."""
    loss: str
    setting: str
    """The setting's label, e.g. `layer=12`, `k=8,cal`, `best`; `select` marks a probe's chosen layer. It names
    and joins records; code that needs a setting's value reads `params`, never this label."""
    seed: int
    split: str
    ids: tuple[str, ...]
    p: np.ndarray
    """(n,) P(y=1) in [0, 1], aligned to `ids`."""
    extra: dict = field(default_factory=dict)
    chain: str = ""
    """The intermediate models between `weak` and `strong`, joined by `CHAIN_SEP` (`toolkit.chain`); empty for a
    model supervised directly by `weak`."""
    params: dict = field(default_factory=dict)
    """The setting's typed fields, as the method declares them: `{"layer": 12}` for a probe's per-layer record,
    `{"k": 8, "calibrated": True}` for prompting; `{}` where the label says all (`select`, `best`). JSON scalars
    only, so they survive every store and the predictions file. What a run *found* (the layer `select` chose,
    a threshold) is in `extra`, not here."""

    def __post_init__(self):
        p = np.asarray(self.p, dtype=np.float64)
        if p.shape != (len(self.ids),):
            raise ToolkitError(f"predictions for {len(self.ids)} ids have shape {p.shape}")
        if not np.all(np.isfinite(p)) or p.min(initial=0) < 0 or p.max(initial=1) > 1:
            raise ToolkitError(f"{self.method}/{self.role} predictions contain NaN or values outside [0, 1]")
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "ids", tuple(self.ids))
        if self.role not in ROLES:
            raise ToolkitError(f"role must be one of {ROLES}, got '{self.role}'")
        if not all(isinstance(v, bool | int | float | str) for v in self.params.values()):
            raise ToolkitError(f"{self.describe()}: params must be JSON scalars, got {self.params}")

    def aligned(self, ids) -> np.ndarray:
        """P(y=1) for `ids`, joined by id (never by position)."""
        pos = {i: k for k, i in enumerate(self.ids)}
        try:
            return self.p[[pos[i] for i in ids]]
        except KeyError as e:
            raise ToolkitError(f"id {e.args[0]} has no prediction in {self.describe()}") from None

    def describe(self) -> str:
        via = f"/via={self.chain}" if self.chain else ""
        return f"{self.task}{via}/{self.method}/{self.role}/{self.loss}/{self.setting}/seed={self.seed}/{self.split}"

    def key(self) -> tuple:
        return tuple(getattr(self, c) for c in ROW_COLUMNS[:-2])

    def with_(self, **changes) -> Predictions:
        return replace(self, **changes)


def score(preds: Predictions, labels: dict[str, int]) -> list[dict]:
    """Tidy rows (accuracy, AUROC, ECE, n) of one record against gold `labels` (id -> 0/1)."""
    y = np.array([labels[i] for i in preds.ids])
    base = {c: getattr(preds, c) for c in ROW_COLUMNS[:-2]}
    values = {"accuracy": metrics.accuracy(y, preds.p), "auroc": metrics.auroc(y, preds.p),
              "ece": metrics.ece(y, preds.p), "n": float(len(y))}
    # Numeric extras (e.g. the layer a `select` record chose) become metric rows too.
    values.update({k: float(v) for k, v in preds.extra.items() if isinstance(v, int | float)})
    return [{**base, "metric": m, "value": v} for m, v in values.items()]


def table(records: list[Predictions], labels: dict[str, int]) -> pd.DataFrame:
    """The tidy results table of many records (columns `ROW_COLUMNS`)."""
    rows = [r for rec in records for r in score(rec, labels)]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


FRAME_COLUMNS = ROW_COLUMNS[:-2] + ["params", "id", "p"]
"""The columns of `predictions_frame`: a record's key, its `params` as sorted-key JSON, then one row per id."""


def predictions_frame(records: list[Predictions]) -> pd.DataFrame:
    """Long per-example table (`FRAME_COLUMNS`), for saving predictions with a run."""
    frames = []
    for rec in records:
        df = pd.DataFrame({"id": rec.ids, "p": rec.p})
        for c in ROW_COLUMNS[:-2]:
            df.insert(len(df.columns) - 2, c, getattr(rec, c))
        df.insert(len(df.columns) - 2, "params", json.dumps(rec.params, sort_keys=True))
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FRAME_COLUMNS)


def records_from_frame(df: pd.DataFrame) -> list[Predictions]:
    """Inverse of `predictions_frame` (extras are not in the frame)."""
    keys = ROW_COLUMNS[:-2] + ["params"]
    out = []
    for key, g in df.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        row["params"] = json.loads(row["params"])
        out.append(Predictions(**row, ids=tuple(g["id"]), p=g["p"].to_numpy()))
    return out


def save_records(records: list[Predictions], path: str | Path) -> None:
    """Write records as CSV (ids, p and the key columns); atomic via a temp file."""
    atomic_write_bytes(path, predictions_frame(records).to_csv(index=False, float_format="%.9g").encode())


def to_bytes(records: list[Predictions]) -> bytes:
    """Records, extras included, as one checksummed blob (`cache.pack`; for the run stores, see `from_bytes`)."""
    id_sets: dict[tuple, int] = {}
    meta = []
    for r in records:
        meta.append({**{c: getattr(r, c) for c in ROW_COLUMNS[:-2]}, "ids": id_sets.setdefault(r.ids, len(id_sets)),
                     "extra": r.extra, "params": r.params})
    p = np.concatenate([r.p for r in records]) if records else np.zeros(0)
    return cache.pack({"p": p}, {"records": meta, "ids": [list(i) for i in id_sets]})


def from_bytes(data: bytes) -> list[Predictions]:
    """Inverse of `to_bytes`; raises `cache.CorruptEntry` (a `ToolkitError`) on a damaged payload."""
    arrays, doc = cache.unpack(data)
    p = arrays["p"]
    ids = [tuple(i) for i in doc["ids"]]
    out, at = [], 0
    for m in doc["records"]:
        rid = ids[m.pop("ids")]
        out.append(Predictions(**m, ids=rid, p=p[at:at + len(rid)]))
        at += len(rid)
    return out


def stored(path: Path, compute, *, what: str, names: dict | None = None) -> tuple[list[Predictions], bool]:
    """Records from the run store file `path` (`to_bytes` format), relabelled with `names`; else `compute()`
    written there atomically. A damaged file warns (naming `what`) and is computed again. Returns the
    records and whether they were loaded."""
    import warnings

    if path.exists():
        try:
            return [r.with_(**(names or {})) for r in from_bytes(path.read_bytes())], True
        except ToolkitError as e:
            warnings.warn(f"{what} {path}: {e}; computing again", stacklevel=3)
    recs = compute()
    atomic_write_bytes(path, to_bytes(recs))
    return recs, False


def load_records(path: str | Path) -> list[Predictions]:
    # keep_default_na=False: an empty chain stays "", not NaN (which groupby would drop)
    df = pd.read_csv(path, dtype={"id": str, "setting": str, "loss": str, "chain": str, "params": str},
                     keep_default_na=False)
    return records_from_frame(df)


SUMMARY_KEYS = ["task", "weak", "chain", "strong", "method", "loss", "setting"]


def summary(records: list[Predictions], labels: dict[str, int], *, split: str = "test", n_boot: int = 1000,
            settings: tuple[str, ...] | dict[str, tuple[str, ...]] = ("select",), caveats: dict | None = None,
            min_gap: float = metrics.MIN_GAP) -> pd.DataFrame:
    """One row per (task, weak, strong, method, loss, setting) student: weak, student and ceiling
    accuracy and AUROC on `split` (means over seeds), and PGR for both: the mean over seeds (`pgr_acc`), the
    median and standard deviation over seeds, the default 95% interval (`pgr_acc_lo`/`_hi`: over seeds and the
    shared test pool, a t interval, with two or more seeds; over test examples only with one, `interval` says
    which), the interval over examples only (`pgr_acc_ex_lo`/`_hi`), the test-pool draws without a PGR
    (`pgr_acc_draws_undefined`, out of `n_boot`: some seed's ceiling did not beat weak there), and the reason
    where PGR is undefined (`pgr_acc_note`; a gap of `min_gap` or less is one); and openai/weak-to-strong's
    aggregate of the same runs (`pgr_acc_openai`: the median over seeds of PGR against the seed-mean weak and
    ceiling accuracies, `metrics.pgr_openai`; undefined where `pgr_acc` is). The ceiling is the same
    method's `ceiling` record with the same setting; the weak model is the seed's supervisor. `settings` are the
    students' settings shown, for every method, or per method (method -> its settings: one method's `layer=3`
    never pulls in another's). `caveats` maps a
    method to a function (students, ceilings) -> what the row's numbers do not show by themselves
    (`Method.caveat`), the `caveat` column."""
    recs = [r for r in records if r.split == split]
    weak = {(r.task, r.weak, r.seed): r for r in recs if r.role == "weak"}
    ceil = {(r.task, r.strong, r.method, r.setting, r.seed): r for r in recs if r.role == "ceiling"}
    students: dict[tuple, list[Predictions]] = {}
    shown = settings if isinstance(settings, dict) else None
    for r in recs:
        if r.role == "student" and r.setting in (shown.get(r.method, ()) if shown is not None else settings):
            students.setdefault(tuple(getattr(r, k) for k in SUMMARY_KEYS), []).append(r)
    rows = []
    for key, group in students.items():
        group = sorted(group, key=lambda r: r.seed)
        ids = group[0].ids
        try:
            w = np.stack([weak[(r.task, r.weak, r.seed)].aligned(ids) for r in group])
            c = np.stack([ceil[(r.task, r.strong, r.method, r.setting, r.seed)].aligned(ids) for r in group])
        except KeyError as e:
            raise ToolkitError(f"summary: no weak or ceiling record for {key} ({e})") from None
        s = np.stack([r.aligned(ids) for r in group])
        y = np.array([labels[i] for i in ids])
        ceilings = [ceil[(r.task, r.strong, r.method, r.setting, r.seed)] for r in group]
        row = dict(zip(SUMMARY_KEYS, key), n_seeds=len(group), n_test=len(ids), n_boot=n_boot,
                   interval=metrics.ONE_SEED if len(group) == 1 else metrics.SEEDS_AND_POOL,
                   caveat=(caveats or {}).get(group[0].method, lambda s, c: "")(group, ceilings))
        for metric in ("accuracy", "auroc"):
            b = metrics.pgr_bootstrap(y, w, s, c, metric=metric, n_boot=n_boot, seed=0, min_gap=min_gap)
            row.update(_pgr_columns("acc" if metric == "accuracy" else "auroc", b))
        # openai's aggregate only where the toolkit's PGR is defined: their rule (mean ceiling > mean weak) prints
        # -11.75 for a gap of 0.003, which next to "undefined" would read as a result
        per_seed = [[metrics.accuracy(y, p) for p in ps] for ps in (w, s, c)]
        row["pgr_acc_openai"] = metrics.pgr_openai(*per_seed) if np.isfinite(row["pgr_acc"]) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _pgr_columns(short: str, b: metrics.PGRBootstrap) -> dict:
    """The summary's columns of one metric (`acc` or `auroc`) from its bootstrap."""
    d = b.pgr.defined
    nan = np.nan
    return {f"weak_{short}": b.weak, f"student_{short}": b.student, f"ceiling_{short}": b.ceiling,
            f"pgr_{short}": b.pgr_mean if d else nan,
            f"pgr_{short}_median": b.pgr_median if d else nan,
            f"pgr_{short}_std": b.pgr_std if d else nan,
            f"pgr_{short}_lo": b.pgr_mean_ci[0] if d else nan,
            f"pgr_{short}_hi": b.pgr_mean_ci[1] if d else nan,
            f"pgr_{short}_ex_lo": b.pgr_mean_examples_ci[0] if d else nan,
            f"pgr_{short}_ex_hi": b.pgr_mean_examples_ci[1] if d else nan,
            f"pgr_{short}_draws_undefined": b.pgr_draws_undefined,
            f"pgr_{short}_note": "" if d else b.pgr.reason}


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
