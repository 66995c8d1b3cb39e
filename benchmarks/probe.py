"""Probe fitting speed and exactness: `fit_many` (all layers × seeds in one call) against a scikit-learn
`LogisticRegression` loop, on the same standardised features and the same C.

    python benchmarks/probe.py --synthetic            # realistic shapes, synthetic features
    python benchmarks/probe.py --cache-entry PATH     # real features: a folder from `python -m toolkit.cache ls`
    python benchmarks/probe.py --device cuda          # fit_many's arms on a GPU (the batched torch engine)

Arms, timed in turn in each of `--repeats` rounds (best time kept, so a busy machine hurts all arms alike):
fit_many at its defaults (float64, tol=1e-8; on a CPU the numpy engine); fit_many in float32 at tol=1e-5 and
1e-4; fit_many's batched torch engine at its defaults (what an accelerator runs; on a CPU, for comparison);
sklearn at its defaults (lbfgs, tol=1e-4, max_iter=100); sklearn at tol=1e-6 with its default max_iter=100,
where most probes stop at the iteration cap short of the tolerance (column `at cap`); and sklearn at tol=1e-6
with max_iter=10000, which does reach it. Ratios are sklearn's time over the arm's. The reference is fit_many
at tol=1e-12, itself checked against sklearn at tol=1e-10 on a few probes. Features are z-scored once per
(layer, seed) on that seed's training sample, outside every arm, and every arm fits with no standardisation of
its own.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits

from toolkit.linear import fit_many


def synthetic_features(L=31, n_pool=1500, d=576, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in for a cache entry: (L, n_pool, d) float32 features and (n_pool,) 0/1 labels, calibrated
    on SmolLM2-135M last-token states of the sentiment task: a power-law covariance spectrum (eigenvalues
    ∝ i^−1.1, which sets how many iterations first-order solvers need), four outlier dimensions ×30, and a
    weak class signal that peaks in the middle layers (test accuracy ≈ 0.57–0.87, as there)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_pool)
    scale = np.arange(1, d + 1) ** -0.55
    feats = np.empty((L, n_pool, d), dtype=np.float32)
    for layer in range(L):
        rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
        signal = 0.02 + 0.05 * np.sin(np.pi * (layer + 1) / (L + 1))
        h = rng.normal(size=(n_pool, d)) * scale + signal * np.outer(2 * y - 1, rng.normal(size=d) * scale)
        h = h @ rotation.T
        h[:, :4] *= 30
        feats[layer] = h
    return feats, y


def load_features(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (L, n_pool, d) of a `toolkit.cache` entry folder and the gold 0/1 labels of its
    examples, joined by id from the task the entry names."""
    from toolkit import tasks
    from toolkit.cache import load_entry

    feats = load_entry(path)
    gold = dict(zip(tasks.load(feats.manifest["task"]).ids, tasks.load(feats.manifest["task"]).labels))
    return np.asarray(feats.hidden), np.array([gold[i] for i in feats.ids])


def make_splits(feats, y, n_train=500, n_test=500, seeds=5):
    """Per (layer, seed): a training sample of n_train from the pool minus the fixed last n_test test
    examples, z-scored with that sample's statistics. Returns Xtr (L·S, n_train, d), ytr, Xte, yte."""
    L = feats.shape[0]
    pool = len(y) - n_test
    if pool < n_train:
        raise SystemExit(f"need at least {n_train + n_test} examples, got {len(y)}")
    idx = np.stack([np.random.default_rng(s).choice(pool, n_train, replace=False) for s in range(seeds)])
    Xtr = feats[:, idx].reshape(L * seeds, n_train, -1).astype(np.float64)
    Xte = np.repeat(feats[:, pool:], seeds, axis=0).astype(np.float64)
    mu, sd = Xtr.mean(1, keepdims=True), Xtr.std(1, keepdims=True) + 1e-12
    return (Xtr - mu) / sd, np.tile(y[idx], (L, 1)), (Xte - mu) / sd, y[pool:]


def sklearn_loop(Xtr, ytr, C, max_iter=100, **kw):
    """Stacked [coef, intercept] rows, and how many probes stopped at the iteration cap."""
    coefs, at_cap = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for X, y in zip(Xtr, ytr):
            m = LogisticRegression(C=C, max_iter=max_iter, **kw).fit(X, y)
            coefs.append(np.r_[m.coef_[0], m.intercept_])
            at_cap += int(m.n_iter_[0] >= max_iter)
    return np.stack(coefs), at_cap


def toolkit_many(Xtr, ytr, C, **kw):
    """Stacked [coef, intercept] rows (fit_many has no iteration cap to report)."""
    probes = fit_many(Xtr, ytr, C=C, standardize=False, **kw)
    return np.stack([np.r_[p.coef_[0], p.intercept_] for p in probes]), None


def logits(Xte, coefs):
    """Test logits (B, m) of stacked [coef, intercept] rows (B, d+1)."""
    return np.einsum("bmd,bd->bm", Xte, coefs[:, :-1]) + coefs[:, -1:]


def rel_err(coefs, ref):
    """Max over probes of max|coef − ref| / max|ref| (intercept included)."""
    return float((np.abs(coefs - ref).max(1) / np.abs(ref).max(1)).max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true", help="synthetic features (the default)")
    src.add_argument("--cache-entry", help="real features; see `load_features`")
    ap.add_argument("--layers", type=int, default=31)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--n-train", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch and BLAS/OpenMP threads for every arm (default: each library's)")
    ap.add_argument("--device", default="cpu", help="where fit_many's arms run (cpu, cuda, cuda:1, ...)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cache_entry:
        feats, y = load_features(args.cache_entry)
    else:
        feats, y = synthetic_features(args.layers, args.n_train + args.n_test + 500, args.d)
    Xtr, ytr, Xte, yte = make_splits(feats, y, args.n_train, args.n_test, args.seeds)
    B, n, d = Xtr.shape
    C = args.C
    print(f"{B} probes = {feats.shape[0]} layers x {args.seeds} seeds; n_train={n}, n_test={Xte.shape[1]}, "
          f"d={d}, C={C}; torch threads: {torch.get_num_threads()}; fit_many on {args.device}")

    with threadpool_limits(limits=args.threads):
        blas = sorted({f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()})
        print(f"threads: torch {torch.get_num_threads()} (fit_many), BLAS/OpenMP {', '.join(blas)} (sklearn)")
        dev = dict(device=args.device)
        if args.device != "cpu":  # include the transfer, and warm the device up outside the timings
            toolkit_many(Xtr[:2], ytr[:2], C, **dev)
        ref, _ = toolkit_many(Xtr, ytr, C, tol=1e-12, max_iter=200)
        check = [0, B // 2, B - 1]
        sk_ref, _ = sklearn_loop(Xtr[check], ytr[check], C, tol=1e-10, max_iter=10000)
        print(f"reference vs sklearn tol=1e-10 on probes {check}: "
              f"max coef rel error {rel_err(ref[check], sk_ref):.1e}")
        arms = {
            "fit_many (float64)": lambda: toolkit_many(Xtr, ytr, C, **dev),
            "fit_many f32 tol=1e-5": lambda: toolkit_many(Xtr, ytr, C, dtype="float32", tol=1e-5, **dev),
            # sklearn's own default tolerance value, on the same gradient-norm scale
            "fit_many f32 tol=1e-4": lambda: toolkit_many(Xtr, ytr, C, dtype="float32", tol=1e-4, **dev),
            "fit_many torch engine": lambda: toolkit_many(Xtr, ytr, C, engine="torch", **dev),
            "sklearn default": lambda: sklearn_loop(Xtr, ytr, C),
            "sklearn tol=1e-6": lambda: sklearn_loop(Xtr, ytr, C, tol=1e-6),
            "sklearn 1e-6 conv.": lambda: sklearn_loop(Xtr, ytr, C, tol=1e-6, max_iter=10000),
        }
        times, coefs, at_cap = {name: np.inf for name in arms}, {}, {}
        for _ in range(args.repeats):
            for name, fn in arms.items():
                t0 = time.perf_counter()
                coefs[name], at_cap[name] = fn()
                times[name] = min(times[name], time.perf_counter() - t0)

    ref_pred = logits(Xte, ref) > 0
    print(f"{'arm':21s} {'time s':>7s} {'vs default':>10s} {'vs 1e-6':>8s} {'vs 1e-6 conv.':>13s} "
          f"{'test acc':>9s} {'agree ref':>9s} {'coef rel err':>12s} {'at cap':>7s}")
    for name in arms:
        pred = logits(Xte, coefs[name]) > 0
        cap = "" if at_cap[name] is None else f"{at_cap[name]}/{B}"
        print(f"{name:21s} {times[name]:7.2f} {times['sklearn default'] / times[name]:9.1f}x "
              f"{times['sklearn tol=1e-6'] / times[name]:7.1f}x {times['sklearn 1e-6 conv.'] / times[name]:12.1f}x "
              f"{100 * (pred == yte[None]).mean():8.2f}% {100 * (pred == ref_pred).mean():8.2f}% "
              f"{rel_err(coefs[name], ref):12.1e} {cap:>7s}")


if __name__ == "__main__":
    main()
