"""Linear probes on cached features: `LogisticProbe`, a scikit-learn estimator, and `fit_many`, which fits
every layer × seed in one call, by damped Newton in one of two engines that solve the same problem the same way:
numpy (`engine="numpy"`, the default on a CPU; `toolkit._linear_cpu`), one probe at a time in cache; and torch
(`engine="torch"`, the default on any other device; this module), every probe of a chunk batched in each
tensor op, which is what a GPU needs. Why two, and what each was measured to gain: benchmarks/README.md, Probes.

The objective is scikit-learn's, so `C` means what it means in `LogisticRegression(C)`:

    C · Σ_i s_i · CE(z_i, (1 − t_i, t_i)) + ½‖w‖²,   z = Xw + b,  intercept b unpenalised,

with soft or hard targets t_i = P(y=1) and sample weights s_i. It is smooth and strictly convex in w, so damped
Newton solves it in ~6 steps to a gradient 1e-8 of its scale. The step length comes from a few 1-D Newton
iterations along the step, checked by Armijo backtracking. Per chunk of probes, Newton runs in the cheaper of
two coordinate systems:
- primal, θ = (w, b): Hessian (d+1)², for n ≫ d; a step reuses the last factor while steps keep cutting ‖g‖ 4×.
- dual, θ = (α, w, b) with w = Xᵀα (Newton from w = 0 never leaves the row space of X), for d ≳ n, the probing
  regime: K = XXᵀ is formed once; the Newton system is solved by conjugate gradients preconditioned by the
  inverse Hessian at the weights of the probe's last Cholesky factorization of I + EKE (E = √D), with a Schur
  step for b, to a relative residual min(0.1, ‖g‖ / (C·Σs)). A probe refactors once its last solve needed more
  than `_Dual._REFACTOR_AFTER` CG iterations.
Mixed precision: the Hessian only steers the step while the gradient fixes the optimum, so K, the factors and
the CG solve are float32 whenever κ(H) allows, while gradient, objective, logits and line search stay in
`dtype`; a float64 dual solve runs in float32 down to a gradient of `_LOW_TOL` and finishes in float64. The
answer is as exact as `dtype`. Chunks are sized (`_CHUNK_BYTES`) so that a chunk's X, K and factors stay in
cache.

Losses other than xent (logconf, product, ...) have targets that depend on the current predictions and on a
warm-up schedule. They are trained full batch, in `n_rounds` rounds: round k replaces the loss by CE to the
target with the same gradient w.r.t. the logits at the current predictions, then Newton-solves that convex
problem from the previous solution. Full batch matters: logconf's threshold is a quantile of the batch.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from toolkit import _linear_cpu
from toolkit._util import ToolkitError
from toolkit.losses import get_loss

_CHUNK_BYTES = 32 << 20  # per chunk of probes on a CPU: passes over X and K are memory-bound, so keep them in cache


def _chunk_bytes(device: str) -> int:
    """Bytes of X, K and factors per chunk of probes solved together: on a CPU what its caches hold; on a GPU a
    quarter of the free device memory, so that every layer of a seed is one batched solve (32 MiB there meant one
    probe per chunk at d >= ~1,700: thousands of small kernels and a host sync per Newton step of each probe).
    Not yet measured on a GPU (`benchmarks/gpu.py` times it)."""
    if torch.device(device).type == "cuda":
        return max(_CHUNK_BYTES, int(torch.cuda.mem_get_info(torch.device(device))[0]) // 4)
    return _CHUNK_BYTES
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _to_device(a: np.ndarray, device) -> torch.Tensor:
    """The one place features go host -> device (a test counts the calls)."""
    return torch.as_tensor(np.ascontiguousarray(a)).to(device)


def uses_torch(device: str, engine: str) -> bool:
    """Whether fits with this device and engine run in the torch engine (see `LogisticProbe.engine`)."""
    return engine == "torch" or (engine == "auto" and torch.device(device).type != "cpu")


class Resident:
    """Features (B, n, d) held on the probe device: moved there once and checked finite once, then sliced and
    fitted on there by `fit_many`, `predict_proba_many` and `weak.cv_accuracy` for every layer, C, loss and fold
    (before, each call re-sent all of X and converted it to float64 on the host). Their dtype is kept; a solve
    converts its chunk on the device."""

    def __init__(self, X, device: str = "cpu", *, checked: bool = False):
        if isinstance(X, torch.Tensor):
            self.X = X
        else:
            X = np.asarray(X)
            if X.dtype.kind not in "biuf" or not np.isfinite(X).all():
                raise ToolkitError("X must be numeric with no NaN or infinity")
            self.X, checked = _to_device(X if X.dtype.kind == "f" else X.astype(np.float64), device), True
        if not checked and not bool(torch.isfinite(self.X).all()):
            raise ToolkitError("X must be numeric with no NaN or infinity")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape)

    @property
    def ndim(self) -> int:
        return self.X.ndim

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index) -> Resident:
        """A slice on the device, e.g. `X[:, rows]` with a numpy index array or mask (indices only are sent)."""
        idx = tuple(torch.as_tensor(i, device=self.X.device) if isinstance(i, np.ndarray) else i
                    for i in (index if isinstance(index, tuple) else (index,)))
        return Resident(self.X[idx], checked=True)

    def numpy(self) -> np.ndarray:
        return self.X.cpu().numpy()


def resident(X, device: str, engine: str):
    """`X` as `Resident` features when fits with `device` and `engine` run in the torch engine; as it is
    otherwise (the numpy engine reads host arrays)."""
    return Resident(X, device) if uses_torch(device, engine) and not isinstance(X, Resident) else X
_ENGINES = ("auto", "numpy", "torch")
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)
"""The inverse L2 strengths every probe chooses from (scikit-learn's meaning, standardised features): the weak
supervisor, the probe students and ceiling, and the chain's intermediates."""
SOLVER_VERSION = 1
"""Part of the key of every stored fit (probes, chain steps): bump it with any change to either engine or to
`toolkit.losses` that changes a result."""


def _ce(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-example CE(z, (1 − t, t)) for the class-1 logit z: softplus(z) − t·z, stable for any z."""
    return F.softplus(z) - t * z


def _sel(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """t[i] for sorted unique indices i, without a copy when i is every row."""
    return t if len(i) == len(t) else t[i]


def _vm(v: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Batched row-vector × matrix, (b, k) @ (b, k, m) -> (b, m). Written with the vector on the left because
    torch's CPU matmul is several times slower for a skinny right operand (M @ v)."""
    return (v[:, None, :] @ M)[:, 0]


def _gram(X: torch.Tensor) -> torch.Tensor:
    """XXᵀ, batched, from its three distinct half blocks: a quarter fewer flops than one bmm, exactly symmetric."""
    h = X.shape[1] // 2
    if h < 128:
        return torch.bmm(X, X.mT)
    X1, X2 = X[:, :h], X[:, h:]
    K = X.new_empty(X.shape[0], X.shape[1], X.shape[1])
    K[:, :h, :h], K[:, h:, h:] = X1 @ X1.mT, X2 @ X2.mT
    K[:, :h, h:] = X1 @ X2.mT
    K[:, h:, :h] = K[:, :h, h:].mT
    return K


def _cholesky(A: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cholesky_ex(A)[0]


def _chol_solve(B: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """(LLᵀ)⁻¹B by two triangular solves (faster on CPU than torch.cholesky_solve, which copies L)."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, B, upper=False), upper=True)


class _Primal:
    """θ = (w, b), shape (B, d+1), z = [X 1]θ. Factor: Cholesky of H = [X 1]ᵀD[X 1] + diag(1, …, 1, 0)."""

    def __init__(self, X: torch.Tensor, hess_dtype: torch.dtype):
        self.Xa = torch.cat([X, X.new_ones(X.shape[:2] + (1,))], dim=2)  # (B, n, d+1)
        self.Xh, self.d = self.Xa.to(hess_dtype), X.shape[2]
        self.L = self.Xh.new_zeros(X.shape[0], self.d + 1, self.d + 1)

    def zeros(self) -> torch.Tensor:
        return self.Xa.new_zeros(self.Xa.shape[0], self.d + 1)

    def w(self, th):
        return th[:, : self.d]

    def factor(self, i, D):
        Xh = _sel(self.Xh, i)
        H = torch.bmm(Xh.mT, Xh * D.to(Xh.dtype)[:, :, None])
        H.diagonal(dim1=1, dim2=2)[:, : self.d] += 1.0
        H[:, self.d, self.d] += 1e-7 * (1 + H[:, self.d, self.d])  # keeps b's pivot positive if D ≈ 0
        self.L[i] = _cholesky(H)

    def gradient(self, i, th, z, r):
        g = _vm(r, _sel(self.Xa, i))
        g[:, : self.d] += th[:, : self.d]
        return g

    def stale(self, i, g_norm, g_prev):
        return g_norm > 0.25 * g_prev

    def direction(self, i, th, z, r, g, D, rtol, fresh):
        """Step Δθ = −H⁻¹g with the stored factor (exact on a fresh one), and its Δw and Δz."""
        L = _sel(self.L, i)
        step = -_chol_solve(g.to(L.dtype)[:, :, None], L)[:, :, 0].to(g.dtype)
        return step, step[:, : self.d], _vm(step, _sel(self.Xa, i).mT)

    def weights(self, th):
        return th[:, : self.d], th[:, self.d]


class _Dual:
    """θ = (α, w, b), shape (B, n+d+1), with w = Xᵀα kept explicitly so that z = Xw + b and the gradient are
    exact in the solution dtype. Every vector of the Newton system lives in the row space of X plus the intercept,
    so it is held as coefficients (a, β) of (Xᵀa, β): ⟨(a, β), (c, γ)⟩ = aᵀKc + βγ and
    H(a, β) = (a + Dq, 1ᵀDq) with q = Ka + β, the logit change, so Hessian products cost one pass over K.

    The Newton system is solved by conjugate gradients in that inner product, preconditioned with the exact
    inverse Hessian at the D of the last factorization: Woodbury, (I + XᵀDX)⁻¹Xᵀv = Xᵀφ(v),
    φ(v) = v − E(I + EKE)⁻¹EKv, E = √D, with a Schur complement for b. On a fresh factor that is Newton's step
    in one iteration; on a stale one a few iterations (each: two passes over K, two triangular solves) recover
    the exact step, far cheaper than refactoring."""

    _REFACTOR_AFTER = 4  # refactor a probe once its last solve needed more CG iterations than this
    _MAX_CG = 30

    def __init__(self, X: torch.Tensor, hess_dtype: torch.dtype):
        self.X, (B, self.n, self.d) = X, X.shape
        self.K = _gram(X.to(hess_dtype))
        self.L, self.E = torch.zeros_like(self.K), self.K.new_zeros(B, self.n)
        # φ(D), Kφ(D) and the Schur complement of b at the factor's D: H₀⁻¹ on the intercept column
        self.phi_b, self.Kphi_b, self.schur = torch.zeros_like(self.E), torch.zeros_like(self.E), self.E.new_zeros(B)
        self.cg_iters = torch.zeros(B, dtype=torch.long, device=X.device)

    def zeros(self) -> torch.Tensor:
        return self.X.new_zeros(self.X.shape[0], self.n + self.d + 1)

    def w(self, th):
        return th[:, self.n : self.n + self.d]

    def stale(self, i, g_norm, g_prev):
        return self.cg_iters[i] > self._REFACTOR_AFTER

    def factor(self, i, D):
        E = D.to(self.K.dtype).sqrt()
        K = _sel(self.K, i)
        A = K * E[:, :, None]
        A.mul_(E[:, None, :]).diagonal(dim1=1, dim2=2).add_(1.0)
        L = _cholesky(A)
        D = E * E
        phi = D - E * _chol_solve((E * _vm(D, K))[:, :, None], L)[:, :, 0]
        Kphi = _vm(phi, K)
        Ds = D.sum(1)
        schur = (Ds - (D * Kphi).sum(1)).clamp_min(1e-7 * (1 + Ds))
        for name, value in zip(("L", "E", "phi_b", "Kphi_b", "schur"), (L, E, phi, Kphi, schur)):
            if len(i) == len(self.K):  # every probe: no copy into the old buffers
                setattr(self, name, value)
            else:
                getattr(self, name)[i] = value

    def _precondition(self, K, L, E, phi_b, Kphi_b, schur, ra, rb):
        """(a, β) = H₀⁻¹(Xᵀra, rb) with the stored factor; returns a, β, Ka and Kra."""
        Kr = _vm(ra, K)
        phi = ra - E * _chol_solve((E * Kr)[:, :, None], L)[:, :, 0]
        Kphi = _vm(phi, K)
        beta = (rb - (E * E * Kphi).sum(1)) / schur
        return phi - beta[:, None] * phi_b, beta, Kphi - beta[:, None] * Kphi_b, Kr

    def gradient(self, i, th, z, r):
        g = _vm(r, _sel(self.X, i)) + self.w(th)
        return torch.cat([g, r.sum(1, keepdim=True)], 1)

    def direction(self, i, th, z, r, g, D, rtol, fresh):
        """Newton step Δθ = −H⁻¹g by preconditioned CG to relative residual `rtol` (per probe), and its Δw, Δz."""
        K, L, E = _sel(self.K, i), _sel(self.L, i), self.E[i]
        pre = (K, L, E, self.phi_b[i], self.Kphi_b[i], self.schur[i])
        D, n = D.to(K.dtype), self.n
        ra, rb = -(r + th[:, :n]).to(K.dtype), -g[:, -1].to(K.dtype)  # residual of H(x) = −g at x = 0
        za, zb, Kza, Kra = self._precondition(*pre, ra, rb)
        if fresh.all():  # the preconditioner is the Hessian: its solve is the Newton step
            self.cg_iters[i] = 1
            return self._step(i, th, za, zb)
        res2_0 = (ra * Kra).sum(1) + rb * rb
        xa, xb = torch.zeros_like(ra), torch.zeros_like(rb)
        pa, pb, Kpa = za, zb, Kza
        rz = (ra * Kza).sum(1) + rb * zb
        live = rz > 0
        iters = torch.zeros(len(i), dtype=torch.long, device=ra.device)
        for _ in range(self._MAX_CG):
            q = Kpa + pb[:, None]
            Dq = D * q
            pHp = (pa * Kpa).sum(1) + (q * Dq).sum(1)
            live &= pHp > 0  # false only through rounding, once the residual is negligible
            step = torch.where(live, rz / torch.where(live, pHp, 1.0), 0.0)
            xa.addcmul_(step[:, None], pa)
            xb.addcmul_(step, pb)
            ra.addcmul_(step[:, None], pa + Dq, value=-1.0)
            rb.addcmul_(step, Dq.sum(1), value=-1.0)
            iters += live
            za, zb, Kza, Kra = self._precondition(*pre, ra, rb)
            live &= (ra * Kra).sum(1) + rb * rb > rtol**2 * res2_0
            if not live.any():
                break
            rz_new = (ra * Kza).sum(1) + rb * zb
            live &= rz_new > 0
            beta = torch.where(live, rz_new / rz, 0.0)
            rz = rz_new
            pa, pb, Kpa = za + beta[:, None] * pa, zb + beta * pb, Kza + beta[:, None] * Kpa
        self.cg_iters[i] = iters
        return self._step(i, th, xa, xb)

    def _step(self, i, th, xa, xb):
        """(Δα, Δw, Δb), Δw and Δz for the solution (xa, xb) of the Newton system, in the solution dtype."""
        X = _sel(self.X, i)
        da, db = xa.to(th.dtype), xb.to(th.dtype)
        dw = _vm(da, X)
        zstep = _vm(dw, X.mT) + db[:, None]
        return torch.cat([da, dw, db[:, None]], 1), dw, zstep

    def weights(self, th):
        return self.w(th), th[:, -1]

    _STATE = ("K", "L", "E", "phi_b", "Kphi_b", "schur", "cg_iters")

    def retyped(self, X: torch.Tensor) -> _Dual:
        """The same problem with X (so gradient, logits and line search) in X's dtype; `adopt` shares factors."""
        other = copy.copy(self)
        other.X = X
        return other

    def adopt(self, other: _Dual):
        """Take over `other`'s kernel, factors and CG counts."""
        for name in self._STATE:
            setattr(self, name, getattr(other, name))

    def lift(self, th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """θ of another dtype → θ in X's dtype with w = Xᵀα and z = Xw + b recomputed exactly; returns θ, z."""
        alpha, b = th[:, : self.n].to(self.X.dtype), th[:, -1].to(self.X.dtype)
        w = _vm(alpha, self.X)
        return torch.cat([alpha, w, b[:, None]], 1), _vm(w, self.X.mT) + b[:, None]


def _step_length(z, zstep, t, s, C, w_dw, dw_sq, iters=4):
    """η ≈ argmin f(θ + ηΔθ) by safeguarded 1-D Newton from η = 1 (f is convex along the ray, and its
    derivatives cost O(n)): early Newton steps on logistic losses are systematically too short."""
    eta = torch.ones_like(w_dw)
    for _ in range(iters):
        p = torch.sigmoid(z + eta[:, None] * zstep)
        d1 = C * (s * (p - t) * zstep).sum(1) + w_dw + eta * dw_sq
        d2 = C * (s * p * (1 - p) * zstep**2).sum(1) + dw_sq
        eta = (eta - d1 / d2.clamp_min(torch.finfo(d2.dtype).tiny)).clamp(eta / 4, 4 * eta).clamp(1e-3, 64.0)
    return eta


_LOW_TOL = 1e-6  # float64 dual solves: gradient reached in float32 before the float64 finish


def _newton(prob, t, s, C, th, z, max_iter, tol, have_factor=False):
    """Damped Newton on every probe of the chunk at once. A probe refactors its Hessian when `prob.stale` says
    the last factor no longer pays (primal: a step cut ‖g‖ less than 4×; dual: its CG solve needed too many
    iterations), and otherwise reuses it. The dual solves each Newton system inexactly, to relative residual
    min(0.1, ‖g‖ / (C·Σs)), which keeps Newton's quadratic rate. A probe leaves the batch when
    ‖g‖ / (C·Σs), a per-example mean on the scale of scikit-learn's `tol`, is ≤ tol, or when a step on a fresh
    factor no longer lowers the objective beyond rounding. Step length: `_step_length`, checked by Armijo
    backtracking. `have_factor`: `prob` holds a factor from an earlier solve to start from. Returns θ, z, steps
    taken."""
    B, eps, dev = t.shape[0], torch.finfo(t.dtype).eps, t.device  # every tensor on the inputs' device
    n_iter, done = torch.zeros(B, dtype=torch.long, device=dev), torch.zeros(B, dtype=torch.bool, device=dev)
    need = torch.full((B,), not have_factor, device=dev)
    g_prev = torch.full((B,), torch.inf, dtype=t.dtype, device=dev)
    active = torch.arange(B, device=dev)
    for _ in range(max_iter):
        ta, sa, tha, za = t[active], s[active], th[active], z[active]
        p = torch.sigmoid(za)
        r, D = C * sa * (p - ta), C * sa * p * (1 - p)
        g = prob.gradient(active, tha, za, r)
        g_norm, scale = g.norm(dim=1), C * sa.sum(1)
        keep = (g_norm > tol * scale) & ~done[active]
        if not keep.all():
            active, ta, sa, tha, za, r, D, g, g_norm, scale = (
                v[keep] for v in (active, ta, sa, tha, za, r, D, g, g_norm, scale))
        if len(active) == 0:
            break
        fresh = need[active] | prob.stale(active, g_norm, g_prev[active])
        if fresh.any():
            prob.factor(active[fresh], D[fresh])
        rtol = (g_norm / scale).clamp_max(0.1)
        step, dw, zstep = prob.direction(active, tha, za, r, g, D, rtol, fresh)
        w = prob.w(tha)
        gstep = (g[:, :-1] * dw).sum(1) + g[:, -1] * step[:, -1]
        w_sq, w_dw, dw_sq = (w * w).sum(1), (w * dw).sum(1), (dw * dw).sum(1)
        f0 = C * (sa * _ce(za, ta)).sum(1) + 0.5 * w_sq
        eta = _step_length(za, zstep, ta, sa, C, w_dw, dw_sq)
        for _ in range(40):  # Armijo backtracking, with slack for rounding once f has converged
            f1 = C * (sa * _ce(za + eta[:, None] * zstep, ta)).sum(1)
            f1 = f1 + 0.5 * (w_sq + 2 * eta * w_dw + eta**2 * dw_sq)
            ok = f1 <= f0 + 1e-4 * eta * gstep + 10 * eps * f0.abs()
            if ok.all():
                break
            eta = torch.where(ok, eta, eta / 2)
        stalled = ~(f1 < f0 - 10 * eps * f0.abs())
        done[active[stalled & fresh]] = True
        need[active], g_prev[active] = stalled, g_norm
        th[active] = tha + eta[:, None] * step
        z[active] = za + eta[:, None] * zstep
        n_iter[active] += 1
    return th, z, n_iter


def _round_target(loss_fn, z, t, k, n_rounds):
    """The soft target whose CE has the loss's gradient w.r.t. the logits at z: p − n·∂loss/∂z₁."""
    out = torch.empty_like(t)
    for j in range(z.shape[0]):
        logits = torch.stack([torch.zeros_like(z[j]), z[j]], dim=1).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(logits, t[j], step=k, total_steps=n_rounds), logits)
        out[j] = torch.sigmoid(z[j]) - z.shape[1] * grad[:, 1]
    return out.clamp(0, 1)


def _numpy_round_target(loss_fn):
    """`_round_target` for one probe's numpy arrays (the CPU engine's form)."""
    def target(z, t, k, n_rounds):
        return _round_target(loss_fn, torch.from_numpy(z)[None], torch.from_numpy(t)[None], k, n_rounds)[0].numpy()
    return target


def _fit_batch(X, t, s, est) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit B probes; X (B, n, d), t and s (B, n) arrays. Returns coef (B, d), intercept (B,), n_iter (B,),
    in the original feature space."""
    if est.dtype not in _DTYPES:
        raise ToolkitError(f"dtype must be one of {sorted(_DTYPES)}, got {est.dtype!r}")
    if not (np.isscalar(est.C) and est.C > 0) or est.max_iter < 1 or not est.tol >= 0 or est.n_rounds < 1:
        raise ToolkitError(f"need C > 0, max_iter >= 1, tol >= 0, n_rounds >= 1; got {est.get_params()}")
    if est.engine not in _ENGINES:
        raise ToolkitError(f"engine must be one of {_ENGINES}, got {est.engine!r}")
    on_cpu = torch.device(est.device).type == "cpu"
    if est.engine == "numpy" and not on_cpu:
        raise ToolkitError(f"engine='numpy' runs on the CPU; got device={est.device!r}")
    loss_fn = get_loss(est.loss, **(est.loss_params or {}))
    rounds = 1 if est.loss == "xent" else est.n_rounds
    if est.engine == "numpy" or (est.engine == "auto" and on_cpu):
        X = X.numpy() if isinstance(X, Resident) else X
        round_target = None if est.loss == "xent" else _numpy_round_target(loss_fn)
        return _linear_cpu.fit_batch(X, t, s, float(est.C), np.dtype(est.dtype).type, est.standardize, est.tol,
                                     est.max_iter, rounds, round_target)
    B, n, d = X.shape
    dual = _linear_cpu.use_dual(n, d)
    m = n if dual else d + 1
    kw = dict(dtype=_DTYPES[est.dtype], device=est.device)
    chunk = max(1, _chunk_bytes(est.device) // (kw["dtype"].itemsize * 2 * n * (d + 1) + 4 * 3 * m * m))
    coef, intercept, n_iter = np.empty((B, d)), np.empty(B), np.empty(B, dtype=np.int64)
    for lo in range(0, B, chunk):
        sl = slice(lo, lo + chunk)
        tc, sc = (torch.tensor(a[sl], **kw) for a in (t, s))
        if isinstance(X, Resident):  # already on the device: converted there, a copy (the solve may write to it)
            Xc = X.X[sl].to(device=est.device, dtype=kw["dtype"], copy=True)
        else:
            Xc = torch.tensor(X[sl], **kw)  # a copy: X may be read-only
        mu, sd = Xc.new_zeros(Xc.shape[0], 1, d), Xc.new_ones(Xc.shape[0], 1, d)
        if est.standardize:  # weighted, so integer weights equal repeated rows
            wts = (sc / sc.sum(1, keepdim=True))[:, :, None]
            mu = (wts * Xc).sum(1, keepdim=True)
            sd = ((wts * (Xc - mu) ** 2).sum(1, keepdim=True)).sqrt()
            sd = torch.where(sd > 1e-12 * (1 + mu.abs()), sd, torch.ones_like(sd))
            Xc = (Xc - mu) / sd
        # The Hessian only steers the step (the gradient fixes the optimum), so it is float32 unless that is
        # too coarse: κ(H) ≤ 1 + C·max_i‖x_i‖²·n/4 must stay well under 1/eps(float32).
        kappa = 1 + float(est.C) * float((sc.amax(1) * (Xc**2).sum((1, 2))).max()) / 4
        hess_dtype = torch.float32 if kappa < 1e5 else kw["dtype"]
        prob = (_Dual if dual else _Primal)(Xc, hess_dtype)
        # A float64 dual solve first runs Newton in float32 throughout (a float32 copy of X, the same K and
        # factors) to a gradient of _LOW_TOL, then finishes in float64 from there (usually one or two steps),
        # so the float64 passes over X and the float64 line search are paid only at the end.
        use_low = dual and (hess_dtype, Xc.dtype) == (torch.float32, torch.float64) and est.tol < _LOW_TOL
        low = prob.retyped(Xc.to(hess_dtype)) if use_low else None
        th = prob.zeros()
        z = torch.zeros_like(tc)
        it = torch.zeros(len(tc), dtype=torch.long, device=tc.device)
        C = float(est.C)
        for k in range(rounds):
            target = tc if est.loss == "xent" else _round_target(loss_fn, z, tc, k, rounds)
            if low is not None:
                low.adopt(prob)
                th_low, _, it_k = _newton(low, target.to(hess_dtype), sc.to(hess_dtype), C, th.to(hess_dtype),
                                          z.to(hess_dtype), est.max_iter, _LOW_TOL, have_factor=k > 0)
                prob.adopt(low)
                th, z = prob.lift(th_low)
                it += it_k
            # D depends on z alone, so a round starts with the factor the previous one ended with
            have_factor = k > 0 or low is not None
            th, z, it_k = _newton(prob, target, sc, C, th, z, est.max_iter, est.tol, have_factor=have_factor)
            it += it_k
        w, b = prob.weights(th)
        w = w / sd[:, 0]
        coef[sl] = w.cpu().double().numpy()
        intercept[sl] = (b - (w * mu[:, 0]).sum(1)).cpu().double().numpy()
        n_iter[sl] = it.cpu().numpy()
    return coef, intercept, n_iter


def _soft_labels(y: np.ndarray, sample_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(y=1) per example and `classes_`. Numbers in [0, 1] are P(y=1) (hard 0/1 or the weak supervisor's
    soft labels), classes [0, 1]; any other two labels (strings, {−1, 1}) are classes, sorted, the second
    positive."""
    if y.dtype.kind in "biuf" and np.all((y >= 0) & (y <= 1)):
        w1, classes = y.astype(np.float64), np.array([0, 1])
    else:
        kind = type_of_target(y, input_name="y")
        if kind == "multiclass":
            raise ToolkitError(
                f"Only binary classification is supported; got {len(np.unique(y))} classes. LogisticProbe "
                "is a binary probe: pass two classes or soft labels P(y=1) in [0, 1]"
            )
        if kind != "binary":
            raise ToolkitError(
                f"Unknown label type: {kind}; labels must be two classes or probabilities P(y=1) in [0, 1]"
            )
        classes = np.unique(y)
        w1 = (y == classes[-1]).astype(np.float64)
    if len(classes) < 2 or not (sample_weight @ w1 > 0 and sample_weight @ (1 - w1) > 0):
        raise ToolkitError("the labels (with weight > 0) hold only one class; a probe needs both classes")
    return w1, classes


class LogisticProbe(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression on fixed features, fitted by batched Newton in torch.

    Parameters
    ----------
    C : inverse regularisation strength, scikit-learn's meaning: minimises C·Σ s·CE + ½‖w‖², intercept
        unpenalised, so with `standardize=False` coefficients equal `LogisticRegression(C=C)`'s.
    standardize : z-score each feature with the (weighted) training mean and std before fitting. The penalty
        then acts on the standardised weights (as in a `StandardScaler` + `LogisticRegression` pipeline);
        `coef_` and `intercept_` are mapped back to the original feature space either way.
    loss : a name from `toolkit.losses` ("xent", "logconf", "product", ...); `loss_params` its parameters.
    n_rounds : full-batch rounds for losses other than xent (see the module docstring); ignored for xent.
    max_iter : Newton iterations per solve (per round; the torch engine's float64 dual solve has that many in each
        of its float32 and float64 phases); `tol` : stop when ‖gradient‖₂ / (C·Σs) ≤ tol.
    engine : "auto" (numpy on a CPU device, torch elsewhere), "numpy" or "torch"; see the module docstring.
        The engines agree to ~1e-7 relative at the default tol. The numpy engine takes two cores (one solves,
        one prepares the next probe) unless `torch.set_num_threads(1)`; its BLAS calls are single-threaded.
    device, dtype : where the torch engine solves, and the precision of gradient, objective and logits, which is
        the precision of the answer (float64, the default: coefficients to ~1e-7 relative at tol=1e-8; float32:
        ~1e-5). Hessian work is float32 in both where the conditioning allows (see the module docstring), so
        float32 saves little on CPU; it halves memory and suits GPUs.
    random_state : accepted for scikit-learn tooling (`set_random_state`); the solver is deterministic.

    Attributes: `coef_` (1, d), `intercept_` (1,), `classes_` (2,), `n_features_in_`, `n_iter_`.
    `fit(X, y)` accepts hard labels (any two classes) or soft labels P(y=1) in [0, 1].
    """

    def __init__(self, C=1.0, standardize=True, loss="xent", loss_params=None, n_rounds=20, max_iter=100,
                 tol=1e-8, device="cpu", dtype="float64", engine="auto", random_state=None):
        self.C, self.standardize, self.loss, self.loss_params = C, standardize, loss, loss_params
        self.n_rounds, self.max_iter, self.tol = n_rounds, max_iter, tol
        self.device, self.dtype, self.engine, self.random_state = device, dtype, engine, random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X, y, sample_weight=None) -> LogisticProbe:
        """X (n, d); y (n,) hard or soft labels; sample_weight (n,) ≥ 0. Returns self."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        w1, self.classes_ = _soft_labels(y, sw)
        coef, intercept, n_iter = _fit_batch(X[None], w1[None], sw[None], self)
        self.coef_, self.intercept_, self.n_iter_ = coef, intercept, int(n_iter[0])
        return self

    def decision_function(self, X) -> np.ndarray:
        """Class-1 logit, shape (n,)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): P(classes_[0]), P(classes_[1])."""
        p = expit(self.decision_function(X))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]


def fit_many(X, y, sample_weight=None, **params) -> list[LogisticProbe]:
    """Fit B independent probes in one batched solve: X (B, n, d), y (B, n) soft or hard labels in [0, 1],
    sample_weight (B, n) or None; `params` are `LogisticProbe`'s. B is typically layers × seeds (each seed
    its own training sample of the same size). Probe b equals `LogisticProbe(**params).fit(X[b], y[b])`."""
    X = X if isinstance(X, Resident) else np.asarray(X)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 3 or y.shape != X.shape[:2]:
        raise ToolkitError(f"fit_many needs X (B, n, d) and y (B, n); got {X.shape} and {y.shape}")
    if not isinstance(X, Resident) and (X.dtype.kind not in "biuf" or not np.isfinite(X).all()):
        raise ToolkitError("X must be numeric with no NaN or infinity")  # a Resident X was checked once
    if not np.all((y >= 0) & (y <= 1)):
        raise ToolkitError("fit_many needs labels P(y=1) in [0, 1] (hard 0/1 or soft); NaN is not allowed")
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if sw.shape != y.shape or not np.all(sw >= 0):
        raise ToolkitError(f"sample_weight must be (B, n) = {y.shape} and non-negative")
    for b in range(len(y)):
        _soft_labels(y[b], sw[b])
    template = LogisticProbe(**params)
    as_float = X if isinstance(X, Resident) or X.dtype.kind == "f" else X.astype(np.float64)
    coef, intercept, n_iter = _fit_batch(as_float, y, sw, template)
    probes = []
    for b in range(len(y)):
        probe = LogisticProbe(**params)
        probe.coef_, probe.intercept_, probe.n_iter_ = coef[b : b + 1], intercept[b : b + 1], int(n_iter[b])
        probe.classes_, probe.n_features_in_ = np.array([0, 1]), X.shape[2]
        probes.append(probe)
    return probes


def predict_proba_many(probes: list[LogisticProbe], X) -> np.ndarray:
    """P(y=1) of probe b on X[b]: X (B, m, d), or (m, d) shared by all probes (`Resident` X: computed on its
    device in float64, one transfer of the (B, m) result back). Returns (B, m, 2)."""
    coef = np.stack([p.coef_[0] for p in probes])
    intercept = np.array([p.intercept_[0] for p in probes])
    if isinstance(X, Resident):
        if X.ndim != 3 or X.shape[0] != len(probes) or X.shape[2] != coef.shape[1]:
            raise ToolkitError(f"X must be ({len(probes)}, m, {coef.shape[1]}); got {X.shape}")
        w, b = (torch.as_tensor(a, device=X.X.device) for a in (coef, intercept))
        z = torch.einsum("bmd,bd->bm", X.X.to(torch.float64), w) + b[:, None]
        p = torch.sigmoid(z).cpu().numpy()
        return np.stack([1 - p, p], axis=2)
    X = np.asarray(X)
    if X.ndim == 2:
        X = np.broadcast_to(X, (len(probes),) + X.shape)
    if X.ndim != 3 or X.shape[0] != len(probes) or X.shape[2] != coef.shape[1]:
        d = coef.shape[1]
        raise ToolkitError(f"X must be ({len(probes)}, m, {d}) or (m, {d}); got {X.shape}")
    p = expit(np.einsum("bmd,bd->bm", X, coef) + intercept[:, None])
    return np.stack([1 - p, p], axis=2)


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
