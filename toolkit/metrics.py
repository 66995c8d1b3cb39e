"""Metrics: accuracy, AUROC, ECE, performance gap recovered (PGR) and paired bootstrap intervals.

Conventions: `y` is Int[ndarray, "n"] in {0, 1}; `p` is Float[ndarray, "n"] = P(y=1), or
Float[ndarray, "n_seeds n"] where stated. Metrics are fractions in [0, 1], not percentages.

The bootstrap is paired: the test pool is the same for weak, student and ceiling and for every seed, so
each draw resamples example indices once and scores every model and seed on those same examples. A draw
is held as a count matrix C[b, i] = how often example i was drawn; every metric is a C-weighted
metric, which keeps 1000 draws x 1000 examples (AUROC included) to milliseconds.

PGR has two intervals. The default one covers seeds and examples: each draw also resamples the seeds with
replacement (a two-level bootstrap), so the spread between seeds' runs (their splits, weak labels and
training) widens it. The example-only one holds the seeds fixed and covers the test pool's sampling alone.
A draw in which some seed's ceiling does not beat its weak model has no PGR; such draws are counted and
placed beyond both ends of the interval (never dropped, which would narrow it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from toolkit._util import ToolkitError, rng


@dataclass(frozen=True)
class PGR:
    """Performance gap recovered, (student - weak) / (ceiling - weak), or why it is undefined."""

    value: float
    """The PGR; nan when undefined. 0: no better than weak; 1: as good as the ceiling."""
    defined: bool
    """False when the ceiling does not clearly beat the weak supervisor (or a metric is nan)."""
    reason: str
    """Why it is undefined, in words with the numbers; "" when defined."""


def _check_y(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0 or not np.isin(y, (0, 1)).all():
        raise ToolkitError("y must be a non-empty 1-D array of 0/1 labels")
    return y.astype(np.float64)


def _check_p(p, n: int, seeds: bool = False) -> np.ndarray:
    """p as float64 of shape (n,), or (n_seeds, n) when `seeds`; finite."""
    p = np.asarray(p, dtype=np.float64)
    ok = p.shape == (n,) or (seeds and p.ndim == 2 and p.shape[1] == n and p.shape[0] > 0)
    if not ok:
        want = f"({n},) or (n_seeds, {n})" if seeds else f"({n},)"
        raise ToolkitError(f"probabilities must have shape {want}, got {p.shape}")
    if not np.isfinite(p).all():
        raise ToolkitError("probabilities must be finite")
    return p


def _acc_w(C: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Accuracy under weights C [B, n] -> [B]; predicts class 1 when p > threshold."""
    correct = ((p > threshold) == (y == 1)).astype(np.float64)
    return C @ correct / C.sum(1)


def _auroc_w(C: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUROC under weights C [B, n] -> [B]: P(p_pos > p_neg) + 0.5 P(tie) over weighted pairs; nan when a
    draw holds one class. Sort once, sum weights per distinct p, count negatives below each positive."""
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # first index of each distinct value
    Cs = C[:, order]
    pos = np.add.reduceat(Cs * ys, starts, axis=1)
    neg = np.add.reduceat(Cs * (1 - ys), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": _acc_w,
    "auroc": _auroc_w,
}


def accuracy(y, p, threshold: float = 0.5) -> float:
    """Fraction of examples where (p > threshold) equals y. y: [n] in {0,1}; p: [n] = P(y=1)."""
    y = _check_y(y)
    return float(_acc_w(np.ones((1, y.size)), y, _check_p(p, y.size), threshold)[0])


def auroc(y, p) -> float:
    """Area under the ROC curve (ties count 1/2); nan when y holds one class. y: [n]; p: [n] scores."""
    y = _check_y(y)
    return float(_auroc_w(np.ones((1, y.size)), y, _check_p(p, y.size))[0])


def ece(y, p, n_bins: int = 10) -> float:
    """Expected calibration error of P(y=1): sum over equal-width bins of p of
    (bin size / n) * |mean(y) - mean(p)| in the bin. Bins are [k/n_bins, (k+1)/n_bins), the last closed.
    y: [n] in {0,1}; p: [n] in [0, 1]."""
    y = _check_y(y)
    p = _check_p(p, y.size)
    if n_bins < 1 or ((p < 0) | (p > 1)).any():
        raise ToolkitError("ece needs n_bins >= 1 and p in [0, 1]")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    gap = np.bincount(b, weights=y, minlength=n_bins) - np.bincount(b, weights=p, minlength=n_bins)
    return float(np.abs(gap).sum() / y.size)


MIN_GAP = 0.02
"""Default absolute ceiling − weak gap (in accuracy or AUROC) at or below which PGR is undefined: about one
standard error of a paired accuracy difference on a 500-example test pool, where PGR's denominator is mostly
noise. A gap can be significant and still this small (a 0.8-point gap once gave PGR 13.5 [6.0, 54.4])."""
SEED_SALT = 0x5EED
ONE_SEED = "one seed: test examples only, seed spread unknown"
SEEDS_AND_POOL = "seeds and test pool: t interval (Welch-Satterthwaite)"
"""Salt of the seed resampling's own random stream, so that the example draws, and with them the
example-only interval, do not depend on whether seeds are resampled."""


def pgr(weak: float, student: float, ceiling: float, min_gap: float = 0.0) -> PGR:
    """PGR = (student - weak) / (ceiling - weak) from three metric values; undefined (value nan) when
    ceiling - weak <= min_gap or a value is nan, with the reason."""
    if any(math.isnan(v) for v in (weak, student, ceiling)):
        return PGR(math.nan, False, f"a metric is nan (weak {weak}, student {student}, ceiling {ceiling})")
    gap = ceiling - weak
    if gap <= min_gap:
        reason = f"ceiling {ceiling:.3f} does not beat weak {weak:.3f} (gap {gap:.3f} ≤ {min_gap:.3f})"
        return PGR(math.nan, False, reason)
    return PGR((student - weak) / gap, True, "")


@dataclass(frozen=True)
class PGRBootstrap:
    """Point estimates and paired-bootstrap percentile intervals for one metric. Metric values are means
    over seeds; `pgr_mean` / `pgr_median` are the mean / median over seeds of per-seed PGRs."""

    metric: str
    """"accuracy" or "auroc"."""
    n_boot: int
    ci: float
    """Coverage of every interval, e.g. 0.95."""
    n_seeds: int
    weak: float
    weak_ci: tuple[float, float]
    student: float
    student_ci: tuple[float, float]
    ceiling: float
    ceiling_ci: tuple[float, float]
    gap: float
    """ceiling - weak (seed means)."""
    gap_ci: tuple[float, float]
    pgr: PGR
    """pgr.value = pgr_mean; pgr.defined / pgr.reason say whether the gap is clearly positive."""
    pgr_mean: float
    pgr_mean_ci: tuple[float, float]
    """The default interval of the seed-mean PGR (`pgr_interval` says which): with two or more seeds, from the
    seeds' spread and the shared test pool's variance (`seed_t_interval`); with one seed, over test examples
    only (the spread between seeds is unknown)."""
    pgr_interval: str
    """What `pgr_mean_ci` covers, in words."""
    pgr_mean_examples_ci: tuple[float, float]
    """Interval of the seed-mean PGR over test examples only, the seeds held fixed."""
    pgr_mean_boot_ci: tuple[float, float]
    """The two-level percentile bootstrap (seeds, then examples): the default until a simulation showed it covers
    the true mean PGR in only 88-92% of studies with 3 seeds that differ (benchmarks/interval_coverage.py)."""
    pgr_median: float
    pgr_median_ci: tuple[float, float]
    """Interval of the seed-median PGR over seeds and examples."""
    pgr_std: float
    """Standard deviation of the per-seed PGRs (ddof=1; nan for one seed)."""
    pgr_seeds: tuple[float, ...]
    """Per-seed PGR (seeds paired by index); nan for a seed whose own gap is <= min_gap."""
    pgr_draws_undefined: int
    """Draws of the test pool where some seed's ceiling does not beat its weak model (or a metric is nan): they
    have no PGR. They sit beyond both ends of the examples-only interval; past a tail's share of the draws they
    make the default interval infinite too (below it, its variance comes from the other draws)."""

    def as_row(self) -> dict:
        """Flat dict for a results table: intervals become `<name>_lo` / `<name>_hi`."""
        row = {}
        for k, v in asdict(self).items():
            if k == "pgr":
                row.update(pgr_defined=v["defined"], pgr_reason=v["reason"])
            elif k.endswith("_ci"):
                row[k[:-3] + "_lo"], row[k[:-3] + "_hi"] = v
            elif k != "pgr_seeds":
                row[k] = v
        return row


def _counts(rng: np.random.Generator, n_draws: int, n: int) -> np.ndarray:
    """[n_draws, n] counts of each example in n_draws resamples with replacement (index matrix -> counts)."""
    idx = rng.integers(0, n, size=(n_draws, n)) + n * np.arange(n_draws)[:, None]
    return np.bincount(idx.ravel(), minlength=n_draws * n).reshape(n_draws, n).astype(np.float64)


def _paired_scores(y: np.ndarray, ps: list, metric: str, n_boot: int, seed: int):
    """Scores of (weak, student, ceiling) per seed: point [3, s] and bootstrap draws [3, n_boot, s]; every
    model and seed is scored on the same resamples. A role given for one seed is broadcast to all s."""
    fn, s, n = METRICS[metric], max(len(p) for p in ps), y.size

    def score(C: np.ndarray) -> np.ndarray:  # [3, B, s]: role, draw, seed
        return np.stack([np.broadcast_to(np.stack([fn(C, y, pk) for pk in p], -1), (len(C), s)) for p in ps])

    draws_rng = rng(seed)
    chunk = max(1, (1 << 22) // n)  # bound memory at ~32 MB per count matrix for large pools
    draws = [score(_counts(draws_rng, min(chunk, n_boot - i), n)) for i in range(0, n_boot, chunk)]
    return score(np.ones((1, n)))[:, 0], np.concatenate(draws, axis=1)


def _interval_with_undefined(x: np.ndarray, undefined: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """Percentile interval (levels `q`) of draws `x` in which the `undefined` draws count as lying beyond both
    ends: at −inf for the lower bound and +inf for the upper one. Each undefined draw thus widens the interval
    (to ±inf once they outnumber a tail) instead of leaving it. Without undefined draws this is np.quantile."""
    if not undefined.any():
        return tuple(float(v) for v in np.quantile(x, q))
    d = x[~undefined]
    n_all, n_undef = x.size, int(undefined.sum())
    if d.size == 0:
        return (-math.inf, math.inf)
    # np.quantile's position of level q among all n_all draws is q * (n_all - 1); the defined draws hold ranks
    # n_undef .. n_all - 1 for the lower bound (undefined at −inf first) and 0 .. d.size - 1 for the upper one.
    lo_pos, hi_pos = q[0] * (n_all - 1) - n_undef, q[1] * (n_all - 1)
    last = max(d.size - 1, 1)
    lo = -math.inf if lo_pos < 0 else float(np.quantile(d, min(lo_pos / last, 1.0)))
    hi = math.inf if hi_pos > d.size - 1 else float(np.quantile(d, hi_pos / last))
    return lo, hi


def seed_t_interval(values: np.ndarray, draws: np.ndarray, ci: float = 0.95, *, correct: bool = True
                    ) -> tuple[float, float]:
    """An interval for the mean over seeds of per-seed statistics `values` [s] (s >= 2) that accounts for having
    only a few seeds and for the test pool they share. `draws` [B, s]: the per-seed statistics on B bootstrap
    resamples of the shared test pool (seeds held fixed, every draw defined).

    Var(mean) = σ²_seed / s + V_test: V_test is the bootstrap variance of the seed mean over test examples (the
    pool's noise, shared by every seed, does not average out); σ²_seed, the spread of the seeds' true values, is
    the seeds' sample variance less what test noise alone adds to it, (tr Σ − 1ᵀΣ1 / s) / (s − 1) with Σ the
    draws' covariance (`correct`; without it, the sample variance itself, which counts that noise twice). The
    multiplier is Student's t with Welch–Satterthwaite degrees of freedom: s − 1 when the seed term dominates,
    towards the normal's when the test pool's does (so one pool's noise is not widened by a 3-seed t)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    s = values.size
    cov = np.atleast_2d(np.cov(draws, rowvar=False))
    v_test = float(cov.sum()) / s**2
    noise = (float(np.trace(cov)) - float(cov.sum()) / s) / (s - 1) if correct else 0.0
    spread = float(values.var(ddof=1))
    a = max(spread - noise, 0.0) / s
    # Welch–Satterthwaite: the seed term's uncertainty is that of the sample variance it comes from (with its
    # noise part), on s − 1 degrees of freedom; the bootstrap's variance is taken as known
    df = (a + v_test) ** 2 / ((spread / s) ** 2 / (s - 1)) if spread > 0 else math.inf
    half = float(stats.t.ppf((1 + ci) / 2, df)) * math.sqrt(a + v_test)
    return float(values.mean()) - half, float(values.mean()) + half


def pgr_bootstrap(
    y,
    p_weak,
    p_student,
    p_ceiling,
    metric: str = "accuracy",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    min_gap: float = MIN_GAP,
) -> PGRBootstrap:
    """PGR with paired bootstrap intervals. y: [n]; each p_*: [n] or [n_seeds, n] (a single array is shared
    by every seed; seeds pair by index). Each draw resamples the n test indices once and reuses them for all
    three models and every seed; for the PGR intervals over seeds and examples it also resamples the seeds.
    PGR is undefined (nan, with the reason) unless the ceiling clearly beats weak: the seed-mean gap must
    exceed `min_gap` (absolute, default `MIN_GAP`), its interval's lower bound must be > 0, and every seed's
    own gap must exceed `min_gap`. Intervals are percentiles; for the metrics, draws where a metric is nan
    (AUROC on a one-class draw) are ignored; for PGR, draws without one are counted and widen the interval
    (`_interval_with_undefined`)."""
    if metric not in METRICS:
        raise ToolkitError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if n_boot < 1 or not 0 < ci < 1:
        raise ToolkitError(f"need n_boot >= 1 and 0 < ci < 1, got n_boot={n_boot}, ci={ci}")
    y = _check_y(y)
    ps = [_check_p(p, y.size, seeds=True).reshape(-1, y.size) for p in (p_weak, p_student, p_ceiling)]
    s = max(len(p) for p in ps)
    if any(len(p) not in (1, s) for p in ps):
        raise ToolkitError(f"seed counts must be 1 or equal, got {[len(p) for p in ps]}")
    point, draws = _paired_scores(y, ps, metric, n_boot, seed)
    q = ((1 - ci) / 2, (1 + ci) / 2)

    def interval(x: np.ndarray) -> tuple[float, float]:
        x = x[np.isfinite(x)]
        return (math.nan, math.nan) if x.size == 0 else tuple(float(v) for v in np.quantile(x, q))

    out = {"metric": metric, "n_boot": n_boot, "ci": ci, "n_seeds": s}
    for k, role, role_draws in zip((0, 1, 2), ("weak", "student", "ceiling"), draws.mean(2)):
        out[role], out[role + "_ci"] = float(point[k].mean()), interval(role_draws)
    w, c = out["weak"], out["ceiling"]
    out["gap"], out["gap_ci"] = c - w, interval(draws[2].mean(1) - draws[0].mean(1))
    seed_pgr = [pgr(*point[:, k], min_gap=min_gap) for k in range(s)]
    reason = pgr(w, out["student"], c, min_gap=min_gap).reason
    lo, hi = out["gap_ci"]
    if not reason and not lo > 0:
        reason = f"gap {c - w:.3f} is not clearly positive: {ci:.0%} CI [{lo:.3f}, {hi:.3f}] reaches 0"
    if not reason and not all(r.defined for r in seed_pgr):
        k = next(k for k, r in enumerate(seed_pgr) if not r.defined)
        reason = f"seed {k}: {seed_pgr[k].reason}"

    nan2 = (math.nan, math.nan)
    vals = np.array([r.value for r in seed_pgr])
    out.update(pgr_mean=math.nan, pgr_median=math.nan, pgr_mean_ci=nan2, pgr_mean_examples_ci=nan2,
               pgr_mean_boot_ci=nan2, pgr_median_ci=nan2, pgr_std=math.nan, pgr_seeds=tuple(vals),
               pgr_draws_undefined=0, pgr_interval=ONE_SEED if s == 1 else SEEDS_AND_POOL)
    if not reason:
        gaps = draws[2] - draws[0]  # [n_boot, s]
        ok = gaps > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            per = np.where(ok, (draws[1] - draws[0]) / np.where(ok, gaps, 1.0), np.nan)
        ok &= np.isfinite(per)
        pick = rng(seed, SEED_SALT).integers(0, s, size=(n_boot, s))  # the seeds each draw resamples
        per2, ok2 = np.take_along_axis(per, pick, 1), np.take_along_axis(ok, pick, 1)
        undef, undef2 = ~ok.all(1), ~ok2.all(1)
        with np.errstate(invalid="ignore"):
            mean_ex, mean2, median2 = per.mean(1), per2.mean(1), np.median(per2, 1)
        examples = _interval_with_undefined(mean_ex, undef, q)
        if s == 1:
            default = examples
        elif undef.mean() > (1 - ci) / 2 or (~undef).sum() < 2:  # the test pool's variance is then unknown
            default = (-math.inf, math.inf)
        else:
            default = seed_t_interval(vals, per[~undef], ci)
        out.update(pgr_mean=float(vals.mean()), pgr_median=float(np.median(vals)),
                   pgr_std=float(vals.std(ddof=1)) if s > 1 else math.nan, pgr_mean_ci=default,
                   pgr_mean_boot_ci=_interval_with_undefined(mean2, undef2, q),
                   pgr_median_ci=_interval_with_undefined(median2, undef2, q),
                   pgr_mean_examples_ci=examples, pgr_draws_undefined=int(undef.sum()))
    return PGRBootstrap(pgr=PGR(out["pgr_mean"], not reason, reason), **out)


def pgr_openai(weak, student, ceiling) -> float:
    """openai/weak-to-strong's aggregate (their `Plotting.ipynb`): each run's PGR against the seed-mean weak and
    seed-mean ceiling (the weak-size and strong-size models trained on ground truth, averaged over seeds), then
    the median over runs; nan unless the mean ceiling beats the mean weak. weak, student, ceiling: one metric
    value per seed. (Their table pools every weak-strong pair of a dataset into one median per loss; this is the
    median for one pair.) The toolkit's own `pgr_mean` pairs each seed's student with that seed's weak model and
    ceiling and averages."""
    w, c = float(np.mean(weak)), float(np.mean(ceiling))
    if not c > w:
        return math.nan
    return float(np.median((np.asarray(student, dtype=np.float64) - w) / (c - w)))


def summarize_seeds(values) -> dict:
    """{"mean", "median", "std", "n"} of per-seed values; std is the sample std (ddof=1), nan for one seed.
    nan values propagate (an undefined PGR is not silently dropped)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ToolkitError("summarize_seeds needs at least one value")
    std = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return {"mean": float(v.mean()), "median": float(np.median(v)), "std": std, "n": int(v.size)}


__all__ = ["METRICS", "PGR", "PGRBootstrap", "accuracy", "auroc", "ece", "pgr"]
__all__ += ["pgr_bootstrap", "pgr_openai", "seed_t_interval", "summarize_seeds"]


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
