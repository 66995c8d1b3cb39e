"""The numpy engine of `toolkit.linear`, its default on a CPU: the torch engine's damped Newton (same objective,
coordinates, factors, preconditioned CG, line search and stopping rule; see `toolkit.linear`'s docstring), run
one probe at a time on single-threaded OpenBLAS/LAPACK calls.

Why a second engine: on a CPU, batching probes buys nothing the BLAS does not already do, and it costs. The
torch engine's few hundred tensor ops per Newton step each pay torch's dispatch (several µs, against ~1.5 µs
for a numpy call on 500 numbers) and each walks a whole chunk of probes, so little stays in a core's cache.
One probe at a time, its kernel K (1 MB in float32 at n = 500) and its factor stay in cache, and a CG
iteration is two matrix-vector products and two triangular solves (BLAS trsv: ~4× faster than LAPACK's potrs
for one right-hand side). The one large GEMM per probe, K = XXᵀ, and torch's Cholesky release the GIL, so a
second thread forms the next probe's K and factors its Hessian at the starting point while this one solves.
What was measured, and what was tried and measured slower: benchmarks/README.md, Probes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import blas, lapack
from scipy.special import expit
from threadpoolctl import threadpool_limits

_REFACTOR_AFTER = 4  # refactor once the last CG solve needed more iterations than this (as the torch engine)
_MAX_CG = 30
_ITERS_GUESS = 8  # typical Newton iterations from zero, only to choose primal vs dual coordinates


def use_dual(n: int, d: int) -> bool:
    """Dual coordinates (n-sized systems, K = XXᵀ formed once) when they cost fewer flops than primal ones."""
    return d * n * n + _ITERS_GUESS * n**3 / 3 < _ITERS_GUESS * (n * d * d + d**3 / 3)


def _factor(build: Callable[[type], np.ndarray], dtype, release_gil: bool = False) -> np.ndarray:
    """Lower Cholesky factor L, in Fortran order, of the symmetric C-ordered matrix `build(dtype)`. By scipy's
    LAPACK in place (the matrix's transpose is itself in Fortran order, so no copy; only L's triangle is set,
    and `_potrs` reads nothing else), or with `release_gil` by torch's, which lets the other thread run (scipy's
    holds the GIL). A float32 factorization that fails (rounding on a badly conditioned matrix) is redone in
    float64."""
    for dt in (dtype, np.float64) if dtype == np.float32 else (dtype,):
        if release_gil:
            L, info = torch.linalg.cholesky_ex(torch.from_numpy(build(dt)))
            L = L.numpy()
        else:
            potrf = lapack.spotrf if dt == np.float32 else lapack.dpotrf
            L, info = potrf(build(dt).T, lower=1, clean=0, overwrite_a=1)
        if info == 0:
            return np.asfortranarray(L)
    raise np.linalg.LinAlgError(f"Cholesky factorization failed (LAPACK info {int(info)})")


def _potrs(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(LLᵀ)⁻¹b for a factor of `_factor`, by two triangular solves (BLAS trsv: ~4× faster than LAPACK's potrs
    for one right-hand side)."""
    trsv = blas.strsv if L.dtype == np.float32 else blas.dtrsv
    return trsv(L, trsv(L, b.astype(L.dtype, copy=False), lower=1), lower=1, trans=1)


class _Primal:
    """θ = (w, b), z = [X 1]θ; factor: Cholesky of [X 1]ᵀD[X 1] + diag(1, …, 1, 0). Lagged: a step reuses the
    last factor while steps keep cutting ‖g‖ 4×."""

    def __init__(self, X: np.ndarray, hess_dtype):
        self.Xa = np.hstack([X, np.ones((len(X), 1), X.dtype)])
        self.Xh, self.d, self.L = self.Xa.astype(hess_dtype), X.shape[1], None
        self.size = self.d + 1

    def w(self, th):
        return th[: self.d]

    def gradient(self, th, r):
        g = r @ self.Xa
        g[: self.d] += th[: self.d]
        return g

    def stale(self, g_norm, g_prev):
        return g_norm > 0.25 * g_prev

    def factor(self, D, release_gil=False):
        def hessian(dt):
            Xh = self.Xh.astype(dt, copy=False)
            H = Xh.T @ (Xh * D.astype(dt)[:, None])
            H.ravel()[:: self.size + 1][: self.d] += 1.0  # ravel: a view of the C-ordered H, so in place
            H[self.d, self.d] += 1e-7 * (1 + H[self.d, self.d])  # keeps b's pivot positive if D ≈ 0
            return H

        self.L = _factor(hessian, self.Xh.dtype, release_gil)

    def direction(self, th, r, g, D, rtol, fresh):
        step = -_potrs(self.L, g).astype(g.dtype)
        return step, step[: self.d], self.Xa @ step

    def weights(self, th):
        return th[: self.d], th[self.d]


class _Dual:
    """θ = (α, w, b) with w = Xᵀα; the Newton system in the coefficients (a, β) of (Xᵀa, β), solved by
    preconditioned CG in the inner product aᵀKc + βγ. As `toolkit.linear._Dual`, one probe."""

    def __init__(self, X: np.ndarray, K: np.ndarray):
        self.X, self.K, (self.n, self.d) = X, K, X.shape
        self.size, self.cg_iters, self.L = self.n + self.d + 1, 0, None

    def w(self, th):
        return th[self.n : self.n + self.d]

    def gradient(self, th, r):
        return np.append(r @ self.X + self.w(th), r.sum())

    def stale(self, g_norm, g_prev):
        return self.cg_iters > _REFACTOR_AFTER

    def factor(self, D, release_gil=False):
        K = self.K
        E = np.sqrt(D).astype(K.dtype)

        def scaled(dt):  # I + EKE
            A = np.multiply(K, E[:, None], dtype=dt)
            A *= E
            A.flat[:: self.n + 1] += 1.0
            return A

        self.L = _factor(scaled, K.dtype, release_gil)
        D = E * E
        phi = D - E * _potrs(self.L, E * (K @ D)).astype(K.dtype)
        Kphi = K @ phi
        Ds = D.sum()
        self.E, self.D0, self.phi_b, self.Kphi_b = E, D, phi, Kphi
        self.schur = max(Ds - D @ Kphi, 1e-7 * (1 + Ds))

    def _precondition(self, ra, rb):
        """(a, β) = H₀⁻¹(Xᵀra, rb) with the stored factor; returns a, β, Ka and Kra."""
        K, E = self.K, self.E
        Kr = K @ ra
        phi = ra - E * _potrs(self.L, E * Kr).astype(K.dtype)
        Kphi = K @ phi
        beta = (rb - self.D0 @ Kphi) / self.schur
        return phi - beta * self.phi_b, beta, Kphi - beta * self.Kphi_b, Kr

    def direction(self, th, r, g, D, rtol, fresh):
        """Newton step by preconditioned CG to relative residual `rtol`; returns Δθ, Δw, Δz."""
        dt = self.K.dtype
        ra, rb = -(r + th[: self.n]).astype(dt), dt.type(-g[-1])
        za, zb, Kza, Kra = self._precondition(ra, rb)
        if fresh:  # the preconditioner is the Hessian: its solve is the Newton step
            self.cg_iters = 1
            return self._step(za, zb)
        D = D.astype(dt)
        res2_0 = ra @ Kra + rb * rb
        xa, xb = np.zeros_like(ra), dt.type(0)
        pa, pb, Kpa = za, zb, Kza
        rz, iters = ra @ Kza + rb * zb, 0
        while rz > 0 and iters < _MAX_CG:
            q = Kpa + pb
            Dq = D * q
            pHp = pa @ Kpa + q @ Dq
            if not pHp > 0:  # only through rounding, once the residual is negligible
                break
            step = rz / pHp
            xa += step * pa
            xb += step * pb
            ra -= step * (pa + Dq)
            rb -= step * Dq.sum()
            iters += 1
            za, zb, Kza, Kra = self._precondition(ra, rb)
            if ra @ Kra + rb * rb <= rtol**2 * res2_0:
                break
            rz_new = ra @ Kza + rb * zb
            beta, rz = rz_new / rz, rz_new
            pa, pb, Kpa = za + beta * pa, zb + beta * pb, Kza + beta * Kpa
        self.cg_iters = iters
        return self._step(xa, xb)

    def _step(self, xa, xb):
        da, db = xa.astype(self.X.dtype), float(xb)
        dw = da @ self.X
        return np.concatenate([da, dw, [db]]), dw, self.X @ dw + db

    def weights(self, th):
        return self.w(th), th[-1]


def _ce(z, t):
    """Per-example CE(z, (1 − t, t)) for the class-1 logit z: softplus(z) − t·z."""
    return np.logaddexp(0.0, z) - t * z


def _step_length(z, zstep, t, s, C, w_dw, dw_sq, iters=4):
    """η ≈ argmin f(θ + ηΔθ) by safeguarded 1-D Newton from η = 1 (as `toolkit.linear._step_length`)."""
    eta, Cs = 1.0, C * s
    zs2 = Cs * zstep * zstep
    for _ in range(iters):
        p = expit(z + eta * zstep)
        d1 = (Cs * (p - t)) @ zstep + w_dw + eta * dw_sq
        d2 = zs2 @ (p * (1 - p)) + dw_sq
        eta = min(max(eta - d1 / max(d2, np.finfo(float).tiny), eta / 4, 1e-3), 4 * eta, 64.0)
    return eta


def newton(prob, t, s, C, th, z, max_iter, tol, exact_factor=False):
    """Damped Newton on one probe, with `toolkit.linear._newton`'s rules: refactor when `prob.stale` says
    so, inexact dual solves to min(0.1, ‖g‖/(C·Σs)), stop at ‖g‖/(C·Σs) ≤ tol or when a step on a fresh factor
    no longer lowers the objective beyond rounding. `prob` holds a factor: `exact_factor` says it was taken at
    this z (so the first step is exact Newton without a new one), else it is stale (a later round's start).
    Returns θ, z, steps taken."""
    eps, scale = np.finfo(z.dtype).eps, C * s.sum()
    need, g_prev, it, fresh = False, np.inf, 0, exact_factor
    Cs = C * s
    while it < max_iter:
        p = expit(z)
        r, D = Cs * (p - t), Cs * p * (1 - p)
        g = prob.gradient(th, r)
        g_norm = float(np.sqrt(g @ g))
        if g_norm <= tol * scale:
            break
        if it > 0 or not exact_factor:
            fresh = need or prob.stale(g_norm, g_prev)
            if fresh:
                prob.factor(D)
        step, dw, zstep = prob.direction(th, r, g, D, min(0.1, g_norm / scale), fresh)
        w = prob.w(th)
        gstep = g[:-1] @ dw + g[-1] * step[-1]
        w_sq, w_dw, dw_sq = w @ w, w @ dw, dw @ dw
        f0 = Cs @ _ce(z, t) + 0.5 * w_sq
        eta = _step_length(z, zstep, t, s, C, w_dw, dw_sq)
        for _ in range(40):  # Armijo backtracking, with slack for rounding once f has converged
            f1 = Cs @ _ce(z + eta * zstep, t) + 0.5 * (w_sq + 2 * eta * w_dw + eta**2 * dw_sq)
            if f1 <= f0 + 1e-4 * eta * gstep + 10 * eps * abs(f0):
                break
            eta /= 2
        stalled = not f1 < f0 - 10 * eps * abs(f0)
        it += 1
        th = th + eta * step
        z = z + eta * zstep
        if stalled and fresh:
            break
        need, g_prev = stalled, g_norm
    return th, z, it


@contextmanager
def _torch_threads(n):
    """torch's intra-op threads set to n inside the block (its factorizations on the second thread must not
    take the first thread's core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Problem:
    """One probe: X (n, d) standardised, in the solution dtype; t, s (n,) targets and sample weights."""

    X: np.ndarray
    t: np.ndarray
    s: np.ndarray


def _hess_dtype(X, s, C, dtype):
    """float32 for Hessian work unless κ(H) ≤ 1 + C·max(s)·Σ‖x_i‖²/4 is too large for it (as the torch engine)."""
    kappa = 1 + C * float(s.max()) * float(np.vdot(X, X)) / 4
    return np.float32 if kappa < 1e5 else dtype


def solve(n_probes: int, problem: Callable[[int], tuple], C: float, tol: float, max_iter: int, rounds: int,
          round_target: Callable | None) -> Iterator[tuple[tuple[np.ndarray, float, int], ...]]:
    """Fit probes 0 … n_probes − 1; `problem(b)` returns (Problem, *extra). Yields ((w, b, n_iter), *extra) in
    order. `round_target(z, t, k, rounds)` gives round k's target for losses other than xent (None: xent, one
    round).

    While this thread runs Newton on a probe, a second one builds the next probe: its Problem, its Newton
    coordinates (the dual's K = XXᵀ) and its Hessian factor at θ = 0, in calls that release the GIL. With torch
    limited to one thread (`torch.set_num_threads(1)`, the toolkit's one knob for cores) each probe is built
    here, when it is needed. BLAS and LAPACK stay single-threaded either way, so results do not depend on timing
    or on the number of cores."""

    def prepare(b):
        prob, *extra = problem(b)
        hd = _hess_dtype(prob.X, prob.s, C, prob.X.dtype)
        if use_dual(*prob.X.shape):
            Xh = prob.X.astype(hd, copy=False)
            coords = _Dual(prob.X, Xh @ Xh.T)
        else:
            coords = _Primal(prob.X, hd)
        coords.factor(C * prob.s / 4, release_gil=True)  # the Hessian at θ = 0, where p = ½
        return coords, prob, extra

    with threadpool_limits(limits=1, user_api="blas"), ExitStack() as stack:
        if torch.get_num_threads() < 2:
            later = lambda b: functools.partial(prepare, b)  # noqa: E731
        else:
            pool = stack.enter_context(ThreadPoolExecutor(1))
            stack.enter_context(_torch_threads(1))
            later = lambda b: pool.submit(prepare, b).result  # noqa: E731
        ahead = later(0) if n_probes else None
        for b in range(n_probes):
            coords, prob, extra = ahead()
            ahead = later(b + 1) if b + 1 < n_probes else None
            yield (_solve_one(coords, prob, C, tol, max_iter, rounds, round_target), *extra)


def _solve_one(coords, prob: Problem, C, tol, max_iter, rounds, round_target):
    th, z, total = np.zeros(coords.size, prob.X.dtype), np.zeros(len(prob.t), prob.X.dtype), 0
    for k in range(rounds):
        target = prob.t if round_target is None else round_target(z, prob.t, k, rounds)
        # D depends on z alone, so a round starts with the factor the previous one ended with
        th, z, it = newton(coords, target, prob.s, C, th, z, max_iter, tol, exact_factor=k == 0)
        total += it
    w, b = coords.weights(th)
    return w, b, total


def fit_batch(X: np.ndarray, t: np.ndarray, s: np.ndarray, C: float, dtype, standardize: bool, tol: float,
              max_iter: int, rounds: int, round_target: Callable | None):
    """Fit B probes; X (B, n, d) (read-only is fine), t and s (B, n). Returns coef (B, d), intercept (B,),
    n_iter (B,) in the original feature space, as `toolkit.linear._fit_batch`."""
    B, n, d = X.shape

    def problem(b):  # a standardised copy of probe b's features, built on the second thread
        Xb, sb = np.array(X[b], dtype=dtype), s[b].astype(dtype)
        mu, sd = np.zeros(d, dtype), np.ones(d, dtype)
        if standardize:  # weighted, so integer weights equal repeated rows
            wts = sb / sb.sum()
            mu = wts @ Xb
            Xb -= mu
            sd = np.sqrt(wts @ (Xb * Xb))
            sd = np.where(sd > 1e-12 * (1 + np.abs(mu)), sd, 1).astype(dtype)
            Xb /= sd
        return Problem(Xb, t[b].astype(dtype), sb), mu, sd

    coef, intercept, n_iter = np.empty((B, d)), np.empty(B), np.empty(B, dtype=np.int64)
    for b, ((w, b0, it), mu, sd) in enumerate(solve(B, problem, C, tol, max_iter, rounds, round_target)):
        coef[b] = w / sd
        intercept[b] = b0 - coef[b] @ mu
        n_iter[b] = it
    return coef, intercept, n_iter
