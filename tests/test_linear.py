"""LogisticProbe against scikit-learn's LogisticRegression, fit_many against per-probe fits, the non-xent
losses, scikit-learn estimator conformance and input errors. Both engines (numpy, the CPU default, and the
batched torch one that accelerators use) face the same references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

import toolkit._linear_cpu as linear_cpu
import toolkit.linear as linear
from toolkit._util import ToolkitError
from toolkit.linear import LogisticProbe, fit_many, predict_proba_many

ENGINES = pytest.mark.parametrize("engine", ["numpy", "torch"])


def make_data(n=300, d=20, seed=0, scale=True):
    """Linearly separable-ish binary data with features of very different scales and offsets."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if scale:
        X = X * rng.uniform(0.2, 5, size=d) + rng.normal(size=d)
    w = rng.normal(size=d)
    logit = (X - X.mean(0)) / X.std(0) @ w / np.sqrt(d) * 3
    y = (logit + rng.logistic(size=n) > 0).astype(int)
    return X, y, 1 / (1 + np.exp(-logit))


def params(m):
    return np.r_[m.coef_.ravel(), m.intercept_]


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("n,d", [(300, 20), (80, 150)])  # n > d (primal Newton) and n < d (dual Newton)
@pytest.mark.parametrize("C", [0.05, 1.0])
@ENGINES
def test_matches_sklearn_hard_labels(n, d, C, engine):
    X, y, _ = make_data(n, d)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X, y)
    probe = LogisticProbe(C=C, standardize=False, engine=engine).fit(X, y)
    assert probe.coef_.shape == (1, d) and probe.intercept_.shape == (1,)
    assert rel_err(params(probe), params(ref)) <= 1e-4
    np.testing.assert_array_equal(probe.predict(X), ref.predict(X))
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    assert list(probe.classes_) == [0, 1] and probe.n_features_in_ == d and probe.n_iter_ >= 1


@ENGINES
def test_matches_sklearn_soft_labels_by_duplicated_rows(engine):
    """CE to a soft label w1 is the sum of CE to 0 with weight 1 − w1 and CE to 1 with weight w1."""
    X, _, w1 = make_data(200, 15, seed=1)
    sw = np.r_[1 - w1, w1]
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(
        np.r_[X, X], np.r_[np.zeros(len(X)), np.ones(len(X))], sample_weight=sw)
    probe = LogisticProbe(C=0.5, standardize=False, engine=engine).fit(X, w1)
    assert rel_err(params(probe), params(ref)) <= 1e-4


@ENGINES
def test_standardize_equals_scaled_sklearn(engine):
    """standardize=True is a StandardScaler + LogisticRegression pipeline, mapped back to raw features."""
    X, y, _ = make_data(250, 12, seed=2)
    mu, sd = X.mean(0), X.std(0)
    ref = LogisticRegression(C=0.3, tol=1e-10, max_iter=10000).fit((X - mu) / sd, y)
    probe = LogisticProbe(C=0.3, engine=engine).fit(X, y)
    assert rel_err(probe.coef_[0] * sd, ref.coef_[0]) <= 1e-4
    np.testing.assert_allclose(probe.decision_function(X), ref.decision_function((X - mu) / sd), atol=1e-6)


@ENGINES
def test_sample_weight_matches_sklearn(engine):
    X, y, _ = make_data(150, 10, seed=3)
    sw = np.random.default_rng(0).uniform(0, 3, size=len(y))
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X, y, sample_weight=sw)
    probe = LogisticProbe(C=1.0, standardize=False, engine=engine).fit(X, y, sample_weight=sw)
    assert rel_err(params(probe), params(ref)) <= 1e-4


@ENGINES
def test_float32_close_to_float64(engine):
    X, y, _ = make_data(200, 30, seed=4)
    a = LogisticProbe(dtype="float32", tol=1e-6, engine=engine).fit(X, y)
    b = LogisticProbe(engine=engine).fit(X, y)
    assert rel_err(params(a), params(b)) <= 1e-3


@ENGINES
def test_fit_many_equals_fit(engine):
    rng = np.random.default_rng(5)
    Xs, ys = zip(*[make_data(120, 40, seed=s)[:2] for s in range(4)])
    X, y = np.stack(Xs), np.stack(ys).astype(float)
    y[1] = rng.uniform(size=y.shape[1])  # one probe on soft labels
    # tol=0 (the rounding floor) on both sides: at the default tol either fit may stop anywhere below
    # ‖g‖ = 1e-8·C·Σs, and a batched and a single fit round differently, so 1e-8 would test BLAS rounding.
    probes = fit_many(X, y, C=0.7, engine=engine, tol=0)
    for b, probe in enumerate(probes):
        single = LogisticProbe(C=0.7, engine=engine, tol=0).fit(X[b], y[b])
        assert rel_err(params(probe), params(single)) <= 1e-8
        np.testing.assert_allclose(probe.predict_proba(X[b]), single.predict_proba(X[b]), atol=1e-10)
    proba = predict_proba_many(probes, X)
    assert proba.shape == (4, 120, 2)
    for b in range(4):
        np.testing.assert_allclose(proba[b], probes[b].predict_proba(X[b]))
    np.testing.assert_allclose(predict_proba_many(probes, X[0])[2], probes[2].predict_proba(X[0]))


def _dual_knobs(monkeypatch, engine, refactor_after, max_cg):
    """Set the dual's refactoring threshold and CG cap in `engine`; returns the list its factorizations (the
    number of probes factored by each call) are appended to."""
    calls = []
    if engine == "torch":
        factor = linear._Dual.factor
        monkeypatch.setattr(linear._Dual, "factor", lambda self, i, D: (calls.append(len(i)), factor(self, i, D))[1])
        monkeypatch.setattr(linear._Dual, "_REFACTOR_AFTER", refactor_after)
        monkeypatch.setattr(linear._Dual, "_MAX_CG", max_cg)
    else:
        factor = linear_cpu._Dual.factor
        monkeypatch.setattr(linear_cpu._Dual, "factor",
                            lambda self, D, **kw: (calls.append(1), factor(self, D, **kw))[1])
        monkeypatch.setattr(linear_cpu, "_REFACTOR_AFTER", refactor_after)
        monkeypatch.setattr(linear_cpu, "_MAX_CG", max_cg)
    return calls


@ENGINES
@pytest.mark.parametrize("refactor_after", [0, 4, 10**9])  # exact Newton every step / default / one factor
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dual_cg_steps_match_exact_newton_and_sklearn(monkeypatch, refactor_after, dtype, engine):
    """n < d: the dual's preconditioned CG on a stale factor converges to the same optimum as refactoring at
    every step, and as scikit-learn; with (almost) a single factorization per probe CG does the later steps."""
    Xs, ys = zip(*[make_data(80, 150, seed=s)[:2] for s in range(3)])
    X, y = np.stack(Xs), np.stack(ys).astype(float)
    y[2] = np.random.default_rng(0).uniform(size=y.shape[1])  # soft labels
    calls = _dual_knobs(monkeypatch, engine, refactor_after, 30 if refactor_after < 10**9 else 300)
    tol = 1e-11 if dtype == "float64" else 1e-6
    probes = fit_many(X, y, C=2.0, standardize=False, dtype=dtype, tol=tol, engine=engine)
    if refactor_after == 10**9:  # refactors only where a stale step stalled on rounding
        assert sum(calls) <= 2 * len(X) < sum(p.n_iter_ for p in probes)
    if refactor_after == 0:
        assert sum(calls) == sum(p.n_iter_ for p in probes)
    for b in range(2):
        ref = LogisticRegression(C=2.0, tol=1e-10, max_iter=10000).fit(X[b], y[b])
        assert rel_err(params(probes[b]), params(ref)) <= (1e-4 if dtype == "float64" else 1e-3)
    _dual_knobs(monkeypatch, engine, 0, 30)
    exact = fit_many(X, y, C=2.0, standardize=False, tol=1e-11, engine=engine)
    for b, (p, e) in enumerate(zip(probes, exact)):  # the soft-label probe is ill-conditioned along b
        assert rel_err(params(p), params(e)) <= (1e-5 if dtype == "float64" else 1e-2)
        np.testing.assert_allclose(p.predict_proba(X[b]), e.predict_proba(X[b]),
                                   atol=1e-8 if dtype == "float64" else 1e-4)


@ENGINES
def test_dual_fit_many_equals_fit(engine):
    """Probes that converge at different steps (some refactor, some reuse a stale factor) in one chunk."""
    Xs, ys = zip(*[make_data(60, 100, seed=s)[:2] for s in range(4)])
    X, y = np.stack(Xs), np.stack(ys).astype(float)
    probes = fit_many(X, y, C=0.1, engine=engine)
    for b, probe in enumerate(probes):
        assert rel_err(params(probe), params(LogisticProbe(C=0.1, engine=engine).fit(X[b], y[b]))) <= 1e-6


@ENGINES
@pytest.mark.parametrize("tol", [1e-4, 1e-5])  # torch: float64 without / with the float32 first phase
def test_dual_float64_loose_tol(tol, engine):
    X, y, _ = make_data(60, 100, seed=12)
    ref = LogisticProbe(C=0.5, tol=1e-12, engine=engine).fit(X, y)
    probe = LogisticProbe(C=0.5, tol=tol, engine=engine).fit(X, y)
    assert rel_err(params(probe), params(ref)) <= 1e-2
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=1e-3)


def test_dual_round_loss_float32_phase_changes_nothing(monkeypatch):
    """logconf in the torch engine's dual: warm-started rounds, each a float32 then a float64 Newton solve,
    agree with float64-only solves, and with the numpy engine (float64 only)."""
    X, y, w1 = make_data(80, 150, seed=13)
    weak = np.clip(w1 + np.random.default_rng(1).normal(0, 0.2, size=len(w1)), 0, 1)
    kw = dict(C=0.3, loss="logconf", n_rounds=5, engine="torch")
    mixed = LogisticProbe(**kw).fit(X, weak)
    monkeypatch.setattr(linear, "_LOW_TOL", 0.0)
    plain = LogisticProbe(**kw).fit(X, weak)
    assert rel_err(params(mixed), params(plain)) <= 1e-6
    numpy = LogisticProbe(**{**kw, "engine": "numpy"}).fit(X, weak)
    assert rel_err(params(numpy), params(plain)) <= 1e-6


@ENGINES
def test_dual_zero_curvature_examples(engine):
    """Huge C on separable data drives most D_i to ~0; the preconditioner and Schur step must stay finite."""
    X, y, _ = make_data(40, 120, seed=11)
    probe = LogisticProbe(C=1e4, standardize=False, max_iter=200, engine=engine).fit(X, y)
    assert np.isfinite(params(probe)).all() and (probe.predict(X) == y).all()


@ENGINES
@pytest.mark.parametrize("loss,loss_params", [("logconf", {}), ("product", {}), ("logconf", {"alpha": 0.75})])
def test_round_losses_run_and_are_sensible(loss, loss_params, engine):
    X, y, w1 = make_data(400, 10, seed=6)
    weak = np.clip(w1 + np.random.default_rng(0).normal(0, 0.2, size=len(w1)), 0, 1)
    xent = LogisticProbe(C=0.1, engine=engine).fit(X, weak)
    # tol=0 (the rounding floor) for the fit_many = fit comparison below, as in test_fit_many_equals_fit
    probe = LogisticProbe(C=0.1, loss=loss, loss_params=loss_params, n_rounds=10, engine=engine, tol=0).fit(X, weak)
    p = probe.predict_proba(X)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    assert (probe.predict(X) == y).mean() > 0.75
    assert probe.n_iter_ > xent.n_iter_  # one solve per round
    # both losses push towards confident predictions: further from 0.5 than plain xent
    assert np.abs(p[:, 1] - 0.5).mean() > np.abs(xent.predict_proba(X)[:, 1] - 0.5).mean()
    many = fit_many(X[None], weak[None], C=0.1, loss=loss, loss_params=loss_params, n_rounds=10, engine=engine,
                    tol=0)[0]
    assert rel_err(params(many), params(probe)) <= 1e-8


@pytest.mark.parametrize("n,d", [(150, 30), (50, 90)])  # primal and dual coordinates
@pytest.mark.parametrize("loss", ["xent", "logconf"])
def test_engines_agree(n, d, loss):
    """The numpy and torch engines solve the same problems to the same optimum: several probes in one call,
    with standardisation, soft labels, sample weights and warm-started rounds."""
    rng = np.random.default_rng(14)
    Xs, _, w1s = zip(*[make_data(n, d, seed=s) for s in range(3)])
    X, y = np.stack(Xs), np.clip(np.stack(w1s) + rng.normal(0, 0.2, size=(3, n)), 0, 1)
    sw = rng.uniform(0.5, 2, size=y.shape)
    kw = dict(C=0.4, loss=loss, n_rounds=5, tol=1e-10)
    a, b = (fit_many(X, y, sw, engine=e, **kw) for e in ("numpy", "torch"))
    for pa, pb in zip(a, b):
        assert rel_err(params(pa), params(pb)) <= 1e-6


@pytest.mark.parametrize("release_gil", [False, True])  # scipy's LAPACK, torch's
def test_numpy_factors_are_the_newton_hessians(release_gil):
    """The numpy engine factors exactly the Hessians of `toolkit.linear`'s docstring: primal [X 1]ᵀD[X 1] plus
    the ridge on w (not on b), dual I + EKE with E = √D."""
    rng = np.random.default_rng(15)
    X, D = rng.normal(size=(30, 5)), rng.uniform(0.01, 0.25, size=30)
    primal = linear_cpu._Primal(X, np.float64)
    primal.factor(D, release_gil=release_gil)
    Xa = np.c_[X, np.ones(30)]
    H = Xa.T @ (Xa * D[:, None]) + np.diag([1.0] * 5 + [0.0])
    H[5, 5] *= 1 + 1e-7
    H[5, 5] += 1e-7
    L = np.tril(primal.L)
    np.testing.assert_allclose(L @ L.T, H, rtol=1e-12, atol=1e-12)
    K = X @ X.T
    dual = linear_cpu._Dual(X, K)
    dual.factor(D, release_gil=release_gil)
    L = np.tril(dual.L)
    np.testing.assert_allclose(L @ L.T, np.eye(30) + np.sqrt(D)[:, None] * K * np.sqrt(D), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("release_gil", [False, True])  # scipy's LAPACK, torch's
def test_numpy_factor_falls_back_to_float64(release_gil):
    """A matrix that is positive definite but singular once rounded to float32 is factored in float64."""
    eps = 1e-9
    build = lambda dt: np.array([[1.0, 1 - eps], [1 - eps, 1.0]], dtype=dt)  # noqa: E731
    L = linear_cpu._factor(build, np.float32, release_gil)
    assert L.dtype == np.float64
    x = linear_cpu._potrs(L, np.array([1.0, 0.0]))
    np.testing.assert_allclose(build(np.float64) @ x, [1.0, 0.0], atol=1e-6)
    with pytest.raises(np.linalg.LinAlgError):
        linear_cpu._factor(lambda dt: np.array([[1.0, 2.0], [2.0, 1.0]], dtype=dt), np.float32, release_gil)


def test_string_and_signed_labels():
    X, y, _ = make_data(100, 5, seed=7)
    ref = LogisticProbe().fit(X, y)
    for labels in (np.array(["neg", "pos"]), np.array([-1, 1])):
        probe = LogisticProbe().fit(X, labels[y])
        np.testing.assert_array_equal(probe.classes_, labels)
        np.testing.assert_array_equal(probe.predict(X), labels[ref.predict(X)])
        np.testing.assert_allclose(params(probe), params(ref))


@pytest.mark.parametrize(
    "X_fn,y_fn,match",
    [
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), lambda y: y, "NaN"),
        (lambda X: X, lambda y: np.where(np.arange(len(y)) == 0, 1.5, y), "Unknown label type"),
        (lambda X: X, lambda y: y * 2 - 0.5, "Unknown label type"),
        (lambda X: X, lambda y: np.arange(len(y)) % 3, "Only binary classification"),
        (lambda X: X, lambda y: y[:-1], "inconsistent numbers of samples"),
        (lambda X: X, lambda y: np.zeros(len(y)), "one class"),
    ],
)
def test_bad_input_raises(X_fn, y_fn, match):
    X, y, _ = make_data(60, 4, seed=8)
    with pytest.raises(ValueError, match=match):
        LogisticProbe().fit(X_fn(X), y_fn(y.astype(float)))


def test_bad_params_and_fit_many_shapes():
    X, y, _ = make_data(60, 4, seed=9)
    with pytest.raises(ToolkitError, match="unknown loss"):
        LogisticProbe(loss="nope").fit(X, y)
    with pytest.raises(ToolkitError, match="dtype"):
        LogisticProbe(dtype="float16").fit(X, y)
    with pytest.raises(ToolkitError, match="C > 0"):
        LogisticProbe(C=0).fit(X, y)
    with pytest.raises(ToolkitError, match="engine must be"):
        LogisticProbe(engine="jax").fit(X, y)
    with pytest.raises(ToolkitError, match="runs on the CPU"):
        LogisticProbe(engine="numpy", device="cuda").fit(X, y)
    with pytest.raises(ToolkitError, match=r"X \(B, n, d\)"):
        fit_many(X, y)
    with pytest.raises(ToolkitError, match=r"\[0, 1\]"):
        fit_many(X[None], 2.0 * y[None])
    with pytest.raises(ToolkitError, match="NaN"):
        fit_many(np.full((1, 60, 4), np.nan), y[None])
    with pytest.raises(ToolkitError, match="X must be"):
        predict_proba_many(fit_many(X[None], y[None]), X[:, :3])
    with pytest.raises(ValueError, match="features"):
        LogisticProbe().fit(X, y).predict(X[:, :3])


# Several checks compare two fits of one problem (sample weights against repeated rows, fit idempotence) at
# scikit-learn's rtol of 1e-7. At the default tol (‖g‖/(C·Σs) ≤ 1e-8) each fit may stop up to ~1e-8 relative
# from the optimum in its probabilities, so two fits can differ by about that much, and which side of 1e-7 they
# land on depended on the CPU's BLAS rounding (it failed on Zen 1). With tol=0 Newton runs to the rounding floor:
# it stops only when a step on a fresh factor no longer lowers the objective, and two fits of these small,
# ridge-regularised problems then agree to ~1e-14, six orders of magnitude inside every tolerance of the checks.
@parametrize_with_checks([LogisticProbe(tol=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


class _NoImplicitDevice(torch.overrides.TorchFunctionMode):
    """Records every tensor factory call without an explicit device: on a GPU such a tensor lands on the CPU
    and the next op that mixes it with the inputs fails ("Expected all tensors to be on the same device")."""

    FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.eye, torch.tensor,
                 torch.linspace, torch.rand, torch.randn}

    def __init__(self):
        super().__init__()
        self.offenders = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FACTORIES and "device" not in kwargs:
            import traceback

            self.offenders.append(traceback.extract_stack()[-2])  # the line that called the factory
        return func(*args, **kwargs)


@pytest.mark.parametrize("n,d", [(150, 30), (50, 90)])  # primal and dual
@pytest.mark.parametrize("loss", ["xent", "logconf"])
def test_torch_engine_creates_every_tensor_on_the_inputs_device(n, d, loss):
    """The torch engine is the GPU engine, and no GPU runs the tests: every tensor it creates must name the
    inputs' device (or come from *_like / new_*), which makes it device-correct by construction."""
    X, _, w1 = make_data(n, d, seed=3)
    mode = _NoImplicitDevice()
    with mode:
        fit_many(X[None], w1[None], C=0.5, loss=loss, n_rounds=3, engine="torch")
    assert not mode.offenders, [f"{f.filename}:{f.lineno} {f.line}" for f in mode.offenders]


def test_a_gpu_solves_every_layer_of_a_seed_in_one_chunk(monkeypatch):
    """On a GPU the chunk of probes solved together is sized from free device memory, not the CPU's 32 MiB cache
    budget: at an 8B model's d = 4,096 and n = 500 that is all 33 layers in one batched solve instead of 33 (the
    CUDA call is recorded, not made)."""
    import torch

    from toolkit import linear

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 << 30, 80 << 30))
    per_probe = 8 * 2 * 500 * (4096 + 1) + 4 * 3 * 501 * 501  # float64 X twice, the dual's K and factors
    assert max(1, linear._chunk_bytes("cpu") // per_probe) == 1  # one probe per chunk, as before
    assert linear._chunk_bytes("cuda") // per_probe >= 33
