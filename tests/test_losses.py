"""Losses against values computed by hand with plain `math`, never by the code under test."""

import math
import warnings

import pytest
import torch

from toolkit import ToolkitError
from toolkit.losses import LOGCONF_MIN_BATCH, LOSSES, get_loss, harden, logconf, product, xent


def _logp(z0: float, z1: float) -> tuple[float, float]:
    lse = math.log(math.exp(z0) + math.exp(z1))
    return z0 - lse, z1 - lse


def _ce(z, target) -> float:
    """Mean soft cross-entropy over rows, by hand. z, target: lists of 2-lists."""
    total = 0.0
    for (z0, z1), (t0, t1) in zip(z, target):
        l0, l1 = _logp(z0, z1)
        total += -(t0 * l0 + t1 * l1)
    return total / len(z)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_xent_two_examples():
    z, w1 = [[0.0, 1.0], [2.0, 0.0]], [0.8, 0.3]
    # ex 1: -(0.2 log p0 + 0.8 log p1), p1 = e/(1+e); ex 2: -(0.7 log p0 + 0.3 log p1), p0 = e^2/(e^2+1)
    e1 = -(0.2 * -math.log(1 + math.e) + 0.8 * (1 - math.log(1 + math.e)))
    e2 = -(0.7 * (2 - math.log(math.e**2 + 1)) + 0.3 * -math.log(math.e**2 + 1))
    got = xent(_t(z), _t(w1), step=0, total_steps=1)
    assert got.ndim == 0
    assert got.item() == pytest.approx((e1 + e2) / 2, rel=1e-6)


def _batch32():
    """32 examples, z = (0, s_i) with distinct s_i; mean(w1) = 0.25 so 8 are hardened to class 1."""
    s = [(-1) ** i * 0.1 * i for i in range(32)]
    z = [[0.0, si] for si in s]
    w1 = [1.0 if i % 4 == 0 else 0.0 for i in range(32)]
    top8 = sorted(range(32), key=lambda i: -s[i])[:8]  # smallest p0 = largest class-1 logit
    yhat1 = [1.0 if i in top8 else 0.0 for i in range(32)]
    return z, w1, yhat1


def _logconf_by_hand(z, w1, yhat1, c):
    target = [[(1 - c) * (1 - a) + c * (1 - b), (1 - c) * a + c * b] for a, b in zip(w1, yhat1)]
    return _ce(z, target)


def test_logconf_step0_equals_xent():
    z, w1, _ = _batch32()
    a = logconf(_t(z), _t(w1), step=0, total_steps=100)
    b = xent(_t(z), _t(w1), step=0, total_steps=100)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


@pytest.mark.parametrize(
    "step,total,frac,weight",
    [
        (20, 100, 0.2, 1.0),  # exactly alpha at warmup_frac * total_steps (not warmup_frac * alpha)
        (50, 100, 0.2, 1.0),  # and after
        (100, 100, 0.2, 1.0),
        (10, 100, 0.2, 0.5),  # alpha / 2 half-way
        (19, 100, 0.2, 0.95),  # no jump at the end of the warm-up
        (7, 10, 0.7, 1.0),  # 0.7 * 10 = 7.000000000000001 in floats
        (0, 100, 0.0, 1.0),  # warmup_frac = 0: no warm-up
    ],
)
def test_logconf_weight_schedule(step, total, frac, weight):
    z, w1, yhat1 = _batch32()
    alpha = 0.6
    got = logconf(_t(z), _t(w1), step=step, total_steps=total, alpha=alpha, warmup_frac=frac)
    assert got.item() == pytest.approx(_logconf_by_hand(z, w1, yhat1, alpha * weight), rel=1e-9)


def test_harden_keeps_class_prior():
    z = _t([[0.0, s] for s in [0.3, -1.0, 2.0, 0.1, -0.5, 1.5, 0.0, -2.0]])
    w1 = _t([0.5, 0.0, 0.0, 0.25, 0.25, 0.0, 0.5, 0.5])  # mean 0.25 on 8 examples -> 2 hardened to class 1
    hard = harden(z, w1)
    assert hard.tolist() == [0, 0, 1, 0, 0, 1, 0, 0]  # the two largest class-1 logits (2.0 and 1.5)
    # ties (saturated softmax) still give exactly the prior; a prior of 1 hardens every example
    assert harden(torch.zeros(8, 2), w1).sum().item() == 2
    assert harden(z, torch.ones(8)).sum().item() == 8
    assert harden(z, torch.zeros(8)).sum().item() == 0


def _openai_hardened(logits: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """openai/weak-to-strong's `logconf_loss_fn` hardening, step by step as their code does it (float32 logits
    and labels, `torch.quantile` of the class-0 probabilities at the weak labels' mean class-1 share)."""
    preds = torch.softmax(logits.float(), dim=-1)
    labels = torch.stack([1 - w1, w1], dim=-1).float()
    threshold = torch.quantile(preds[:, 0], torch.mean(labels, dim=0)[1])
    return (preds[:, 0] < threshold).float()


@pytest.mark.parametrize("n", [5, 7, 8, 31, 32, 33])
def test_the_quantile_rule_hardens_exactly_openais_examples(n):
    """`threshold=quantile` (`--recipe paper`) hardens the very examples openai's code does, on batches of odd
    and even sizes with ties (logits rounded to a coarse grid, saturated ones); the toolkit's rank rule differs by
    at most one example where the logits do not tie, and keeps the prior exactly where they do."""
    gen = torch.Generator().manual_seed(n)
    differ = 0
    for trial in range(200):
        z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        if trial % 2:
            z = (z * 2).round() / 2  # ties
        if trial % 5 == 0:
            z[: n // 3] = torch.tensor([0.0, 50.0], dtype=torch.float64)  # saturated: p0 ties at ~0
        w1 = torch.rand(n, generator=gen, dtype=torch.float64)
        ours = harden(z, w1, "quantile")
        assert torch.equal(ours, _openai_hardened(z, w1)), (n, trial)
        rank = harden(z, w1)
        differ += int(not torch.equal(rank, ours))
        if trial % 2 == 0 and trial % 5:  # no ties: at most one example apart
            assert abs(rank.sum() - ours.sum()).item() <= 1
    assert differ > 0  # the two rules do differ in some batches
    loss = get_loss("logconf", threshold="quantile")
    assert torch.isfinite(loss(torch.randn(n, 2), torch.rand(n), step=1, total_steps=2))


def test_logconf_warns_below_min_batch():
    z, w1 = torch.randn(8, 2), torch.rand(8)
    with pytest.warns(UserWarning, match="unreliable"):
        logconf(z, w1, step=5, total_steps=10)
    z, w1 = torch.randn(LOGCONF_MIN_BATCH, 2), torch.rand(LOGCONF_MIN_BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logconf(z, w1, step=5, total_steps=10)


def test_product_hand_values():
    # ex 1: p = (1/4, 3/4), w = (0.6, 0.4): p*w = (0.15, 0.30) -> t = (1/3, 2/3)
    # ex 2: hard label w1 = 1 -> t = (0, 1) whatever p is
    z = [[0.0, math.log(3)], [1.0, -1.0]]
    expected = (-(1 / 3 * math.log(0.25) + 2 / 3 * math.log(0.75)) - _logp(1.0, -1.0)[1]) / 2
    got = product(_t(z), _t([0.4, 1.0]), step=0, total_steps=10)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # alpha = 2, beta = 0.5: t ∝ (sqrt(1/4) * 0.6^2, sqrt(3/4) * 0.4^2)
    a, b = 0.5 * 0.36, math.sqrt(0.75) * 0.16
    expected = -(a / (a + b) * math.log(0.25) + b / (a + b) * math.log(0.75))
    got = product(_t(z[:1]), _t([0.4]), step=0, total_steps=10, alpha=2.0, beta=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_product_hard_labels_and_alpha0_no_nan():
    z = torch.tensor([[3.0, -3.0], [0.0, 0.0]], requires_grad=True)
    for alpha in (0.0, 1.0):
        loss = product(z, torch.tensor([0.0, 1.0]), step=0, total_steps=1, alpha=alpha)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    # alpha = 0 ignores w: t = p, so the loss is the mean entropy of p
    got = product(_t([[0.0, math.log(3)]]), _t([0.0]), step=0, total_steps=1, alpha=0.0)
    assert got.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-9)


def test_product_warmup_starts_as_xent():
    z, w1 = torch.randn(6, 2), torch.rand(6)
    a = product(z, w1, step=0, total_steps=10, warmup_frac=0.5)
    assert a.item() == pytest.approx(xent(z, w1, step=0, total_steps=10).item(), rel=1e-6)


def test_entropy_hand_value():
    z = [[0.0, math.log(3)]]
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = _ce(z, [[0.6, 0.4]]) + 0.5 * 0.3 * h  # c = alpha * step / (warmup_frac * total) = 0.3 * 0.5
    got = get_loss("entropy", alpha=0.3)(_t(z), _t([0.4]), step=1, total_steps=10)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_window_hand_value():
    """Three examples, radius 0.15: softmax max 0.6 (in the window), 0.75 and 0.9 (out). Only the first is
    scored, and the sum is divided by all three."""
    z = [[0.0, math.log(0.6 / 0.4)], [math.log(0.75 / 0.25), 0.0], [0.0, math.log(0.9 / 0.1)]]
    w1 = [0.2, 0.7, 0.0]
    expected = -(0.8 * math.log(0.4) + 0.2 * math.log(0.6)) / 3
    got = get_loss("window")(_t(z), _t(w1), step=0, total_steps=1)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    wide = get_loss("window", radius=0.5)(_t(z), _t(w1), step=0, total_steps=1)  # every example: xent
    assert wide.item() == pytest.approx(xent(_t(z), _t(w1), step=0, total_steps=1).item(), rel=1e-12)
    confident = get_loss("window", radius=0.05)(_t(z), _t(w1), step=0, total_steps=1)
    assert confident.item() == 0.0
    with pytest.raises(ToolkitError, match="radius"):
        get_loss("window", radius=0.0)(_t(z), _t(w1), step=0, total_steps=1)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_only_through_logits(name):
    """d loss / d z = (softmax(z) - target) / n with the target held constant: the target is detached."""
    torch.manual_seed(0)
    z = torch.randn(40, 2, dtype=torch.float64, requires_grad=True)
    w1 = torch.rand(40, dtype=torch.float64, requires_grad=True)
    loss = get_loss(name)(z, w1, step=50, total_steps=100)
    loss.backward()
    assert w1.grad is None
    p = torch.softmax(z.detach(), -1)
    w = torch.stack([1 - w1.detach(), w1.detach()], -1)
    if name == "xent":
        target = w
    elif name == "logconf":
        hard = harden(z, w1)
        target = 0.5 * w + 0.5 * torch.stack([1 - hard, hard], -1)
    elif name == "product":
        target = p * w / (p * w).sum(-1, keepdim=True)
    elif name == "window":  # out of the window the gradient is 0, as if the target were the prediction itself
        target = torch.where((p.amax(-1) < 0.65)[:, None], w, p)
    else:  # entropy adds a term that depends on z by design; check only that w1 gets no gradient
        return
    assert torch.allclose(z.grad, (p - target) / 40)


def test_get_loss_errors_and_binding():
    with pytest.raises(ToolkitError, match="known losses: entropy, logconf, product, window, xent"):
        get_loss("focal")
    with pytest.raises(ToolkitError, match="takes no parameter alpha"):
        get_loss("xent", alpha=0.5)
    with pytest.raises(ToolkitError, match="warmup"):
        get_loss("logconf", warmup=0.1)
    fn = get_loss("logconf", alpha=0.75, warmup_frac=0.0)
    z, w1, yhat1 = _batch32()
    assert fn(_t(z), _t(w1), step=0, total_steps=5).item() == pytest.approx(
        _logconf_by_hand(z, w1, yhat1, 0.75), rel=1e-9
    )


def test_input_checks():
    with pytest.raises(ToolkitError, match=r"shape \(n, 2\)"):
        xent(torch.zeros(4, 3), torch.zeros(4), step=0, total_steps=1)
    with pytest.raises(ToolkitError, match="w1 must have shape"):
        xent(torch.zeros(4, 2), torch.zeros(5), step=0, total_steps=1)
    with pytest.raises(ToolkitError, match=r"\[0, 1\]"):
        xent(torch.zeros(2, 2), torch.tensor([-1.0, 1.0]), step=0, total_steps=1)
    with pytest.raises(ToolkitError, match="alpha"):
        logconf(torch.zeros(2, 2), torch.zeros(2), step=0, total_steps=1, alpha=1.5)
    with pytest.raises(ToolkitError, match="total_steps"):
        logconf(torch.zeros(32, 2), torch.zeros(32), step=0, total_steps=0)


def test_low_precision_logits_and_integer_labels():
    z = torch.randn(4, 2).to(torch.bfloat16)
    loss = xent(z, torch.tensor([0, 1, 1, 0]), step=0, total_steps=1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
