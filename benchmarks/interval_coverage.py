"""Do the PGR intervals cover 95%? A simulation with a known true mean PGR.

Each simulated study has `seeds` training runs evaluated on one shared test pool of `n_test` examples, as a
comparison has. Seed k's weak, student and ceiling models have population accuracies a_w,k ~ 0.70 + N(0, 0.02),
a_c,k ~ 0.85 + N(0, 0.02), and a_s,k = a_w,k + PGR_k (a_c,k − a_w,k) with PGR_k ~ N(0.5, seed_sd²): the true
mean PGR is 0.5 whatever the seeds, and seed_sd is the spread of PGR between seeds (docs/results.md reports
about 0.27). On the pool, example i is right for a model when ρ z_i + √(1 − ρ²) ε < Φ⁻¹(accuracy), z_i the
example's difficulty shared by every model and seed (so weak and student errors are correlated, ρ = 0.6), ε
each model's own noise. Each interval is computed by `toolkit.metrics.pgr_bootstrap` on the pool; coverage is
the share of studies whose interval holds 0.5, with its Monte-Carlo standard error.

    python benchmarks/interval_coverage.py                       # 1, 3, 5, 10 seeds x seed SD 0 .. 0.35
    python benchmarks/interval_coverage.py --studies 200 --seeds 3 --sds 0.25 --n-boot 300   # quick
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.stats import norm

from toolkit import metrics

TRUE_PGR = 0.5
ARMS = {"default (t; 1 seed: examples)": "pgr_mean_ci", "two-level bootstrap": "pgr_mean_boot_ci",
        "examples only": "pgr_mean_examples_ci"}


def study(rng: np.random.Generator, seeds: int, seed_sd: float, n_test: int, rho: float = 0.6) -> tuple:
    """One simulated study: gold labels [n] and predictions [seeds, n] of weak, student and ceiling."""
    a_w = np.clip(0.70 + rng.normal(0, 0.02, seeds), 0.55, 0.8)
    a_c = np.clip(0.85 + rng.normal(0, 0.02, seeds), 0.8, 0.95)
    a_s = np.clip(a_w + rng.normal(TRUE_PGR, seed_sd, seeds) * (a_c - a_w), 0.01, 0.99)
    y = rng.integers(0, 2, n_test)
    z = rng.normal(size=n_test)

    def preds(acc: np.ndarray) -> np.ndarray:
        right = rho * z + math.sqrt(1 - rho**2) * rng.normal(size=(len(acc), n_test)) < norm.ppf(acc)[:, None]
        return np.where(right, y, 1 - y) * 0.6 + 0.2

    return y, preds(a_w), preds(a_s), preds(a_c)


def coverage(seeds: int, seed_sd: float, studies: int, n_test: int, n_boot: int, seed: int = 0) -> dict:
    """Per interval: coverage of the true mean PGR, its standard error, the median width; and how many studies
    had an undefined PGR (ceiling not clearly above weak), which are left out."""
    rng = np.random.default_rng([seed, seeds, int(seed_sd * 1000)])
    hits = {arm: [] for arm in ARMS}
    widths = {arm: [] for arm in ARMS}
    undefined = 0
    for k in range(studies):
        b = metrics.pgr_bootstrap(*study(rng, seeds, seed_sd, n_test), n_boot=n_boot, seed=k, min_gap=0.0)
        if not b.pgr.defined:
            undefined += 1
            continue
        for arm, field in ARMS.items():
            lo, hi = getattr(b, field)
            if math.isnan(lo):
                continue
            hits[arm].append(lo <= TRUE_PGR <= hi)
            widths[arm].append(hi - lo)
    out = {"undefined": undefined}
    for arm in ARMS:
        h = np.asarray(hits[arm], dtype=float)
        out[arm] = (h.mean(), math.sqrt(h.mean() * (1 - h.mean()) / max(h.size, 1)), float(np.median(widths[arm])))\
            if h.size else (math.nan, math.nan, math.nan)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--seeds", default="1,3,5,10")
    parser.add_argument("--sds", default="0,0.1,0.25,0.35")
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"true mean PGR {TRUE_PGR}; {args.studies} studies per row; test pool {args.n_test}; {args.n_boot} "
          "bootstrap draws; coverage ± its standard error (median width)")
    print(f"{'seeds':>5} {'seed SD':>7}  " + "  ".join(f"{arm:>28}" for arm in ARMS))
    for seeds in (int(s) for s in args.seeds.split(",")):
        for sd in (float(s) for s in args.sds.split(",")):
            t0 = time.perf_counter()
            res = coverage(seeds, sd, args.studies, args.n_test, args.n_boot)
            cells = [f"{c:6.1%} ± {se:4.1%} ({w:5.2f})" if not math.isnan(c) else f"{'—':>28}"
                     for c, se, w in (res[arm] for arm in ARMS)]
            print(f"{seeds:>5} {sd:>7.2f}  " + "  ".join(f"{c:>28}" for c in cells) +
                  f"   [{res['undefined']} undefined, {time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
