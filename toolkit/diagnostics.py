"""Diagnostics of weak-to-strong students: agreement with the supervisor (and imitation of its errors),
the random-noise control, misfit, calibration, per-layer probe curves and agreement between methods.

Pure functions over `toolkit.records.Predictions` and gold labels (id -> 0/1); nothing here touches a
model or the disk. Conventions:

- A hard prediction is `p > 0.5` (the same threshold as `metrics.accuracy`); rates are fractions in [0, 1].
- Arrays are joined by example id through `Predictions.aligned`, never by position.
- A record's *supervisor* is the record with role `weak` and the same (task, weak, seed, split).
- A rate over an empty subset (e.g. agreement where the supervisor is wrong, when it never is) is nan.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from toolkit import methods, metrics
from toolkit._util import ToolkitError
from toolkit.records import CHAIN_SEP, Predictions

__all__ = ["AGREEMENT", "DIAG_COLUMNS", "MISFIT", "agreement", "calibration"]
__all__ += ["chain_accuracy", "cross_agreement", "layer_curves", "misfit", "noise_control", "summarize", "table"]

DIAG_COLUMNS = ["task", "weak", "chain", "strong", "method", "role", "loss", "setting", "seed", "split", "diagnostic",
                "value"]
KEYS = DIAG_COLUMNS[:10]
AGREEMENT = ("agree", "agree_weak_right", "agree_weak_wrong", "n_weak_right", "n_weak_wrong", "student_acc",
             "weak_acc")
MISFIT = ("err_weak", "err_student", "gain", "misfit", "ratio")


def _arrays(*ps) -> list[np.ndarray]:
    out = [np.asarray(p, dtype=np.float64) for p in ps]
    n = out[0].shape
    if len(n) != 1 or n[0] == 0 or any(p.shape != n for p in out):
        raise ToolkitError(f"diagnostics need non-empty 1-D arrays of one length, got {[p.shape for p in out]}")
    if not all(np.isfinite(p).all() for p in out):
        raise ToolkitError("diagnostics need finite probabilities and labels")
    return out


def _rate(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else float("nan")


def agreement(student_p, weak_p, y) -> dict[str, float]:
    """Agreement of a student's hard predictions with its supervisor's, overall and split by whether the
    supervisor is right. All arguments are (n,) arrays aligned by example; p's are P(y=1), y is gold 0/1.

    With s = student_p > 0.5, w = weak_p > 0.5:
    - `agree` = mean(s == w)
    - `agree_weak_right` = mean(s == w | w == y); `n_weak_right` = #(w == y)
    - `agree_weak_wrong` = mean(s == w | w != y) -- imitation of the supervisor's errors (for a binary
      task, the fraction of the supervisor's errors the student repeats); `n_weak_wrong` = #(w != y)
    - `student_acc` = mean(s == y); `weak_acc` = mean(w == y)
    A conditional rate is nan when its subset is empty."""
    sp, wp, y = _arrays(student_p, weak_p, y)
    s, w, y = sp > 0.5, wp > 0.5, y == 1
    same, right = s == w, w == y
    return {"agree": _rate(same), "agree_weak_right": _rate(same[right]), "agree_weak_wrong": _rate(same[~right]),
            "n_weak_right": float(right.sum()), "n_weak_wrong": float((~right).sum()),
            "student_acc": _rate(s == y), "weak_acc": _rate(right)}


def misfit(student_p, weak_p, y, soft: bool = False) -> dict[str, float]:
    """Gain over the supervisor and misfit to it (Charikar, Pabbaraju & Shiragur 2024, "Quantifying the
    gain in weak-to-strong generalization"). Arguments are (n,) arrays aligned by example, normally on
    `strong_train`, the inputs the student was fitted on.

    Hard (default), with s = student_p > 0.5, w = weak_p > 0.5:
        err_weak = mean(w != y), err_student = mean(s != y), misfit = mean(s != w).
    Soft (`soft=True`), squared distances of the probabilities, the quantities of the theorem:
        err_weak = mean((weak_p - y)^2), err_student = mean((student_p - y)^2),
        misfit = mean((student_p - weak_p)^2).
    gain = err_weak - err_student; ratio = gain / misfit (nan when misfit is 0).

    The theorem: if the student class is convex and contains the target, and the student minimises the
    squared distance to the supervisor over it, then err_student <= err_weak - misfit (soft), i.e.
    gain >= misfit and ratio >= 1. For the hard version it is a heuristic: gain ~ misfit."""
    sp, wp, y = _arrays(student_p, weak_p, y)
    if soft:
        ew, es, m = np.mean((wp - y) ** 2), np.mean((sp - y) ** 2), np.mean((sp - wp) ** 2)
    else:
        s, w, yb = sp > 0.5, wp > 0.5, y == 1
        ew, es, m = np.mean(w != yb), np.mean(s != yb), np.mean(s != w)
    gain = float(ew - es)
    return {"err_weak": float(ew), "err_student": float(es), "gain": gain, "misfit": float(m),
            "ratio": gain / float(m) if m > 0 else float("nan")}


def _gold(labels: dict, ids) -> np.ndarray:
    try:
        return np.array([labels[i] for i in ids], dtype=np.float64)
    except KeyError as e:
        raise ToolkitError(f"id {e.args[0]} has no gold label") from None


def _via(chain: str, model: str) -> str:
    return f"{chain}{CHAIN_SEP}{model}" if chain else model


def _supervisors(records: list[Predictions]) -> dict[tuple, Predictions]:
    """(task, weak, chain, seed, split) -> the record a model with that weak and chain learned from; an ambiguous
    key is an error. A direct model's (chain "") is the weak supervisor; a bootstrapped one's (chain `m1>m2`, see
    `toolkit.chain`) is its immediate one, the last intermediate's record (a student record with extra
    `intermediate`), found under its own chain extended by its name."""
    out: dict[tuple, Predictions] = {}
    for r in records:
        if r.role == "weak" or r.extra.get("intermediate"):
            k = (r.task, r.weak, "" if r.role == "weak" else _via(r.chain, r.strong), r.seed, r.split)
            if k in out:
                raise ToolkitError(f"two weak supervisors for task {r.task}, weak {r.weak}, seed {r.seed}, "
                                   f"split {r.split}: {out[k].describe()} and {r.describe()}")
            out[k] = r
    return out


def _rows(rec: Predictions, values: dict, split: str | None = None) -> list[dict]:
    base = {k: getattr(rec, k) for k in KEYS}
    if split is not None:
        base["split"] = split
    return [{**base, "diagnostic": d, "value": float(v)} for d, v in values.items()]


def _curve_rows(curves: pd.DataFrame) -> list[dict]:
    """best-during-training vs final from training curves (one row per eval, `best` marks the chosen one; the
    `method` column says whose: `compare` fills it in from the method that returned them)."""
    need = {"task", "weak", "strong", "method", "role", "loss", "seed", "step", "val_agreement", "test_acc", "best"}
    if missing := need - set(curves.columns):
        raise ToolkitError(f"training curves lack columns {sorted(missing)}")
    c = curves.assign(chain=curves.get("chain", ""), setting="curve")
    rows = []
    for key, g in c.groupby(KEYS[:9], sort=False):
        g = g.sort_values("step")
        best, last = g[g["best"].astype(bool)], g.iloc[-1]
        best = best.iloc[0] if len(best) else g.loc[g["val_agreement"].idxmax()]
        base = dict(zip(KEYS[:9], key))
        vals = {"val": {"best_step": best["step"], "final_step": last["step"],
                        "best_val_agreement": best["val_agreement"], "final_val_agreement": last["val_agreement"]},
                "test": {"best_test_acc": best["test_acc"], "final_test_acc": last["test_acc"],
                         "best_minus_final_test_acc": best["test_acc"] - last["test_acc"]}}
        rows += [{**base, "split": s, "diagnostic": d, "value": float(v)} for s, vs in vals.items()
                 for d, v in vs.items()]
    return rows


def table(records: list[Predictions], labels: dict[str, int], *, split: str = "test",
          curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tidy diagnostics table (`diagnostics.csv`): one row per value, columns `DIAG_COLUMNS`
    (task, weak, strong, method, role, loss, setting, seed, split, diagnostic, value).

    - On `split`, every non-weak record (student, control, ceiling, baseline; every setting) against its
      seed's supervisor: the `agreement` family (`AGREEMENT`). A record whose supervisor is missing gets
      no agreement rows (a warning says how many).
    - On `strong_train`, every student and control record: the hard `misfit` family (`MISFIT`).
    - On `split`, every record (the supervisor too): `ece` (10 equal-width bins, `metrics.ece`).
    - With `curves` (fine-tune training curves with the columns step, val_agreement, test_acc, best and
      task, weak, strong, role, loss, seed): per run, setting `curve`, on `val`: best_step, final_step,
      best_val_agreement, final_val_agreement; on `test`: best_test_acc, final_test_acc,
      best_minus_final_test_acc (the eval chosen by val agreement vs the last eval)."""
    sup = _supervisors(records)
    rows, orphans = [], 0
    for r in records:
        if r.split == split:
            y = _gold(labels, r.ids)
            if r.role != "weak":
                w = sup.get((r.task, r.weak, r.chain, r.seed, r.split))
                if w is None:
                    orphans += 1
                else:
                    rows += _rows(r, agreement(r.p, w.aligned(r.ids), y))
            rows += _rows(r, {"ece": metrics.ece(y, r.p)})
        if r.split == "strong_train" and r.role in ("student", "control"):
            w = sup.get((r.task, r.weak, r.chain, r.seed, r.split))
            if w is not None:
                rows += _rows(r, misfit(r.p, w.aligned(r.ids), _gold(labels, r.ids)))
    if orphans:
        warnings.warn(f"diagnostics.table: {orphans} record(s) on {split} have no weak supervisor with the same "
                      "task, weak model and seed; they get no agreement rows", stacklevel=2)
    if curves is not None and len(curves):
        rows += _curve_rows(curves)
    return pd.DataFrame(rows, columns=DIAG_COLUMNS)


def noise_control(diag: pd.DataFrame) -> pd.DataFrame:
    """Students against their random-noise controls, from the per-seed `table`. A control matches a
    student with the same task, weak, strong, method, loss, setting and split; seeds are paired.

    One row per matched pair with columns task, weak, strong, method, loss, setting, split, n_seeds,
    weak_acc, student_acc, control_acc, acc_gap (= student_acc - control_acc), acc_gap_std,
    student_agree, control_agree, student_agree_weak_wrong, control_agree_weak_wrong, imitation_gap
    (= student_agree_weak_wrong - control_agree_weak_wrong), imitation_gap_std: means over paired seeds,
    std with ddof=1 (nan for one seed). A positive imitation_gap means the student repeats the supervisor's
    errors more than random label noise at the same rate would make it."""
    cols = ["task", "weak", "chain", "strong", "method", "loss", "setting", "split", "n_seeds", "weak_acc",
            "student_acc", "control_acc", "acc_gap", "acc_gap_std", "student_agree", "control_agree",
            "student_agree_weak_wrong", "control_agree_weak_wrong", "imitation_gap", "imitation_gap_std"]
    want = ("student_acc", "weak_acc", "agree", "agree_weak_wrong")
    d = diag[diag["role"].isin(("student", "control")) & diag["diagnostic"].isin(want)]
    if d.empty or not (d["role"] == "control").any():
        return pd.DataFrame(columns=cols)
    wide = d.pivot_table(index=KEYS, columns="diagnostic", values="value", aggfunc="first").reset_index()
    pair = ["task", "weak", "chain", "strong", "method", "loss", "setting", "split", "seed"]
    m = wide[wide["role"] == "student"].merge(wide[wide["role"] == "control"], on=pair, suffixes=("_s", "_c"))
    if m.empty:
        return pd.DataFrame(columns=cols)
    m = m.assign(acc_gap=m["student_acc_s"] - m["student_acc_c"],
                 imitation_gap=m["agree_weak_wrong_s"] - m["agree_weak_wrong_c"])
    g = m.groupby(pair[:-1], sort=False, dropna=False)
    out = g.agg(n_seeds=("seed", "nunique"), weak_acc=("weak_acc_s", "mean"), student_acc=("student_acc_s", "mean"),
                control_acc=("student_acc_c", "mean"), acc_gap=("acc_gap", "mean"), acc_gap_std=("acc_gap", "std"),
                student_agree=("agree_s", "mean"), control_agree=("agree_c", "mean"),
                student_agree_weak_wrong=("agree_weak_wrong_s", "mean"),
                control_agree_weak_wrong=("agree_weak_wrong_c", "mean"), imitation_gap=("imitation_gap", "mean"),
                imitation_gap_std=("imitation_gap", "std"))
    return out.reset_index()[cols]


def summarize(diag: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds of the per-seed `table`: one row per (task, weak, strong, method, role, loss,
    setting, split, diagnostic) with columns mean, std (ddof=1; nan for one seed) and n_seeds (seeds
    with a finite value; nan values, e.g. agreement on an empty subset, are left out of the mean).

    The `noise_control` comparison is appended as rows of role `student` with the diagnostics
    control_acc, acc_minus_control, control_agree_weak_wrong and imitation_minus_control (means over
    paired seeds; std is the std of the paired difference for the two differences)."""
    cols = [k for k in KEYS if k != "seed"] + ["diagnostic", "mean", "std", "n_seeds"]
    if diag is None or diag.empty:
        raise ToolkitError("summarize: the diagnostics table is empty")
    g = diag.groupby(cols[:-3], sort=False, dropna=False)["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    nc = noise_control(diag)
    if len(nc):
        base = nc.assign(role="student")
        extra = [base.assign(diagnostic=d, mean=nc[m], std=nc[s] if s else np.nan, n_seeds=nc["n_seeds"])
                 for d, m, s in (("control_acc", "control_acc", None), ("acc_minus_control", "acc_gap", "acc_gap_std"),
                                 ("control_agree_weak_wrong", "control_agree_weak_wrong", None),
                                 ("imitation_minus_control", "imitation_gap", "imitation_gap_std"))]
        out = pd.concat([out] + [e[cols] for e in extra], ignore_index=True)
    return out[cols]


def _label(r: Predictions) -> str:
    return f"{r.method}/{r.loss}" if r.role == "student" else f"{r.method}/{r.loss}/{r.role}"


def cross_agreement(records: list[Predictions], labels: dict[str, int], split: str = "test", *,
                    settings: dict[str, str] | None = None,
                    roles: Sequence[str] = ("student",)) -> pd.DataFrame:
    """Do different ways of eliciting the strong model make the same errors? For every pair of students
    (labels `method/loss`; `method/loss/role` for other `roles`) on the same task, weak, strong and seed,
    using one setting per method (`settings`, default `methods.student_settings()`; methods not in it are left out),
    on the ids both records hold, with hard predictions a, b and error sets E_a = {a != y}, E_b = {b != y}:

    - agree = mean(a == b)
    - error_jaccard = |E_a & E_b| / |E_a | E_b| (nan when neither errs)
    - both_wrong = |E_a & E_b| / n

    Long form, one row per unordered pair (a before b in method-then-loss order), means over seeds:
    columns task, weak, strong, split, a, b, agree, error_jaccard, both_wrong, n_seeds, n (mean ids)."""
    cols = ["task", "weak", "chain", "strong", "split", "a", "b", "agree", "error_jaccard", "both_wrong", "n_seeds",
            "n"]
    settings = methods.student_settings() if settings is None else settings
    order = {m: i for i, m in enumerate(settings)}
    groups: dict[tuple, dict[str, Predictions]] = {}
    for r in records:
        if r.split == split and r.role in roles and settings.get(r.method) == r.setting:
            g = groups.setdefault((r.task, r.weak, r.chain, r.strong, r.seed), {})
            if _label(r) in g:
                raise ToolkitError(f"cross_agreement: two records for {_label(r)}: {g[_label(r)].describe()}")
            g[_label(r)] = r
    per_seed = []
    for (task, weak, chain, strong, _seed), g in groups.items():
        names = sorted(g, key=lambda k: (order[g[k].method], roles.index(g[k].role), g[k].loss))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                ra, rb = g[a], g[b]
                in_b = set(rb.ids)
                ids = [x for x in ra.ids if x in in_b]
                if not ids:
                    raise ToolkitError(f"cross_agreement: {ra.describe()} and {rb.describe()} share no ids")
                y = _gold(labels, ids) == 1
                pa, pb = ra.aligned(ids) > 0.5, rb.aligned(ids) > 0.5
                ea, eb = pa != y, pb != y
                union = (ea | eb).sum()
                per_seed.append({"task": task, "weak": weak, "chain": chain, "strong": strong, "split": split,
                                 "a": a, "b": b,
                                 "agree": np.mean(pa == pb), "both_wrong": np.mean(ea & eb), "n": len(ids),
                                 "error_jaccard": (ea & eb).sum() / union if union else np.nan})
    if not per_seed:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(per_seed)
    out = df.groupby(cols[:7], sort=False).agg(agree=("agree", "mean"), error_jaccard=("error_jaccard", "mean"),
                                               both_wrong=("both_wrong", "mean"), n_seeds=("agree", "size"),
                                               n=("n", "mean"))
    return out.reset_index()[cols]


def calibration(records: list[Predictions], labels: dict[str, int], bins: int = 10, *, split: str = "test",
                settings: Sequence[str] | dict[str, str] | None = None) -> pd.DataFrame:
    """Reliability and confidence histogram of P(y=1) per record on `split` (optionally only `settings`: a
    list of settings, or a map method -> setting such as `methods.student_settings()`, which keeps the supervisor too).
    Bins are equal-width on p, [k/bins, (k+1)/bins), the last closed (as `metrics.ece`).

    Long form, one row per (record, bin): the record's key columns (task ... split), bin (0 .. bins-1),
    lo, hi (bin edges), count (examples with p in the bin), mean_p (their mean p; nan when empty),
    frac_pos (their fraction of gold 1; nan when empty), ece (the record's ECE, repeated on its rows:
    sum over bins of count / n * |frac_pos - mean_p|)."""
    if bins < 1:
        raise ToolkitError("calibration needs bins >= 1")
    edges = np.linspace(0, 1, bins + 1)
    frames = []
    for r in records:
        if r.split != split:
            continue
        if isinstance(settings, dict):
            if r.role != "weak" and settings.get(r.method) != r.setting:
                continue
        elif settings is not None and r.setting not in settings:
            continue
        y = _gold(labels, r.ids)
        b = np.minimum((r.p * bins).astype(np.int64), bins - 1)
        count = np.bincount(b, minlength=bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.bincount(b, weights=r.p, minlength=bins) / count
            frac = np.bincount(b, weights=y, minlength=bins) / count
        df = pd.DataFrame({"bin": np.arange(bins), "lo": edges[:-1], "hi": edges[1:], "count": count,
                           "mean_p": mean_p, "frac_pos": frac, "ece": metrics.ece(y, r.p, n_bins=bins)})
        for k in reversed(KEYS):
            df.insert(0, k, getattr(r, k))
        frames.append(df)
    cols = KEYS + ["bin", "lo", "hi", "count", "mean_p", "frac_pos", "ece"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def layer_curves(records: list[Predictions], labels: dict[str, int], split: str | Sequence[str] = "test"
                 ) -> pd.DataFrame:
    """Per-layer accuracy from the per-layer records (`params["layer"]`: students, controls, ceilings), against gold and
    against the weak labels: gold_acc = mean((p > 0.5) == y); weak_label_acc = mean((p > 0.5) ==
    (w > 0.5)) with w the seed's supervisor on the same split (nan without one). The weak-label accuracy
    on `val` is what selects a student's layer, so pass split=("val", "test") to see both.

    One row per (task, weak, strong, method, role, loss, split, layer) with columns gold_acc, gold_acc_std,
    weak_label_acc, weak_label_acc_std (means and ddof=1 stds over seeds; std nan for one seed), n_seeds
    and n_chosen (how many seeds' `select` record of the same model chose this layer, from extra["layer"])."""
    splits = (split,) if isinstance(split, str) else tuple(split)
    sup = _supervisors(records)
    chosen: dict[tuple, set] = {}
    rows = []
    for r in records:
        model = (r.task, r.weak, r.chain, r.strong, r.method, r.role, r.loss)
        if r.setting == "select" and "layer" in r.extra:
            chosen.setdefault(model + (int(r.extra["layer"]),), set()).add(r.seed)
        layer = r.params.get("layer")
        if layer is None or r.split not in splits or r.role not in ("student", "control", "ceiling"):
            continue
        y = _gold(labels, r.ids)
        w = sup.get((r.task, r.weak, r.chain, r.seed, r.split))
        hard = r.p > 0.5
        rows.append(dict(zip(("task", "weak", "chain", "strong", "method", "role", "loss"), model), split=r.split,
                         layer=int(layer), seed=r.seed, gold_acc=np.mean(hard == (y == 1)),
                         weak_label_acc=np.mean(hard == (w.aligned(r.ids) > 0.5)) if w is not None else np.nan))
    cols = ["task", "weak", "chain", "strong", "method", "role", "loss", "split", "layer", "gold_acc", "gold_acc_std",
            "weak_label_acc", "weak_label_acc_std", "n_seeds", "n_chosen"]
    if not rows:
        return pd.DataFrame(columns=cols)
    g = pd.DataFrame(rows).groupby(cols[:9], sort=False)
    out = g.agg(gold_acc_mean=("gold_acc", "mean"), gold_acc_std=("gold_acc", "std"),
                weak_label_acc_mean=("weak_label_acc", "mean"), weak_label_acc_std=("weak_label_acc", "std"),
                n_seeds=("seed", "nunique")).reset_index()
    out = out.rename(columns={"gold_acc_mean": "gold_acc", "weak_label_acc_mean": "weak_label_acc"})
    out["n_chosen"] = [len(chosen.get(tuple(row[c] for c in cols[:7]) + (row["layer"],), ()))
                       for _, row in out.iterrows()]
    return out.sort_values(cols[:9], kind="stable", ignore_index=True)[cols]


def chain_accuracy(records: list[Predictions], labels: dict[str, int], split: str = "test", *,
                   settings: dict[str, str] | None = None) -> pd.DataFrame:
    """Accuracy along each bootstrapping chain (`toolkit.chain`), the paper's bootstrapping figure in numbers.

    For every bootstrapped student (a non-empty `chain` m1>…, role student, the method's setting from `settings`,
    default `methods.student_settings()`), one row per step of its chain: step 0 is the weak supervisor m0, steps
    1 … K−1 the intermediates (setting `crossfit`), step K the student. Columns: task, chain (m0>…>mK),
    method, loss, setting, step, model, accuracy (mean over seeds), accuracy_std, n_seeds, and on the last
    step `direct_accuracy` (the same method trained directly on m0's labels) and `ceiling_accuracy`."""
    settings = methods.student_settings() if settings is None else settings
    recs = [r for r in records if r.split == split]
    acc = lambda r: float(np.mean((r.p > 0.5) == (_gold(labels, r.ids) == 1)))
    by_key = {(r.task, r.weak, r.chain, r.strong, r.method, r.role, r.loss, r.setting, r.seed): r for r in recs}
    weak = {(r.task, r.weak, r.seed): r for r in recs if r.role == "weak"}
    rows = []
    for r in recs:
        if r.role != "student" or not r.chain or r.extra.get("intermediate") or settings.get(r.method) != r.setting:
            continue
        names = [r.weak, *r.chain.split(CHAIN_SEP), r.strong]
        steps = [weak.get((r.task, r.weak, r.seed))]
        for i in range(1, len(names) - 1):
            steps.append(by_key.get((r.task, r.weak, CHAIN_SEP.join(names[1:i]), names[i], "probe", "student", "xent",
                                     "crossfit", r.seed)))
        steps.append(r)
        direct = by_key.get((r.task, r.weak, "", r.strong, r.method, "student", r.loss, r.setting, r.seed))
        ceiling = next((c for c in recs if c.role == "ceiling" and c.task == r.task and c.strong == r.strong
                        and c.method == r.method and c.setting == r.setting and c.seed == r.seed), None)
        for i, (name, step) in enumerate(zip(names, steps)):
            if step is None:
                continue
            last = i == len(names) - 1
            rows.append({"task": r.task, "chain": CHAIN_SEP.join(names), "method": r.method, "loss": r.loss,
                         "setting": r.setting, "seed": r.seed, "step": i, "model": name, "accuracy": acc(step),
                         "direct_accuracy": acc(direct) if last and direct is not None else np.nan,
                         "ceiling_accuracy": acc(ceiling) if last and ceiling is not None else np.nan})
    cols = ["task", "chain", "method", "loss", "setting", "step", "model", "accuracy", "accuracy_std", "n_seeds",
            "direct_accuracy", "ceiling_accuracy"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    keys = ["task", "chain", "method", "loss", "setting", "step", "model"]
    out = df.groupby(keys, sort=False).agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
                                           n_seeds=("seed", "nunique"), direct_accuracy=("direct_accuracy", "mean"),
                                           ceiling_accuracy=("ceiling_accuracy", "mean")).reset_index()
    return out[cols]


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
