"""Batched Cholesky at the dual solver's size: LAPACK's potrf (torch.linalg.cholesky) against a blocked,
right-looking Cholesky whose panels and trailing updates run on bmm, the candidate for moving the
factorization onto GEMM speed. Also prints GEMM's rate for scale.

    python benchmarks/cholesky.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch


def best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def blocked_cholesky(A: torch.Tensor, nb: int) -> torch.Tensor:
    """Lower Cholesky factors of a batch (B, n, n) of SPD matrices, nb columns at a time: potrf on the
    diagonal block, the panel as A21 · L11⁻ᵀ (an explicit small inverse, then bmm), a bmm trailing update."""
    A = A.clone()
    n = A.shape[-1]
    for k in range(0, n, nb):
        e = min(k + nb, n)
        L11 = torch.linalg.cholesky(A[:, k:e, k:e])
        A[:, k:e, k:e] = L11
        if e < n:
            inv = torch.linalg.solve_triangular(L11, torch.eye(e - k, dtype=A.dtype).expand_as(L11), upper=False)
            panel = A[:, e:, k:e] @ inv.transpose(1, 2)
            A[:, e:, k:e] = panel
            A[:, e:, e:] -= panel @ panel.transpose(1, 2)
    return A.tril()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=31)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    B, n, d = args.batch, args.n, args.d
    torch.manual_seed(0)
    X = torch.randn(B, n, d)
    gemm = best_time(lambda: X @ X.transpose(1, 2), args.repeats)
    print(f"{B} x ({n}x{d}) @ ({d}x{n}) float32 bmm: {2 * B * n * n * d / gemm / 1e9:.1f} GFLOPS")
    for dtype in (torch.float32, torch.float64):
        K = (X @ X.transpose(1, 2) / d + torch.eye(n)).to(dtype)
        ref = torch.linalg.cholesky(K)
        base = best_time(lambda K=K: torch.linalg.cholesky(K), args.repeats)
        print(f"{str(dtype):14s} potrf            {base * 1e3:7.1f} ms  {B * n**3 / 3 / base / 1e9:5.1f} GFLOPS  1.00x")
        for nb in (64, 128, 256):
            L = blocked_cholesky(K, nb)
            err = float((L - ref).abs().max() / ref.abs().max())
            t = best_time(lambda K=K, nb=nb: blocked_cholesky(K, nb), args.repeats)
            print(f"{str(dtype):14s} blocked nb={nb:<4d}  {t * 1e3:7.1f} ms  {B * n**3 / 3 / t / 1e9:5.1f} GFLOPS  "
                  f"{base / t:.2f}x  (max rel. diff {err:.1e})")


if __name__ == "__main__":
    main()
