"""Losses for training a student on weak labels, shared by the probe and the fine-tuner.

Every loss has one signature, so callers never special-case a loss:

    loss(logits, w1, *, step, total_steps, **params) -> Float[Tensor, ""]

- `logits`: Float[Tensor, "n 2"], column 1 is the class-1 logit (fp16/bf16 are computed in fp32).
- `w1`: Float[Tensor, "n"], the weak soft label P(y=1) in [0, 1]; gold labels are just 0./1.
- `step`: the 0-based optimiser step; `total_steps`: steps in the whole run (for warm-up schedules).
- returns the mean over the batch. Targets are always detached: gradients flow only through `logits`.

`get_loss(name, **params)` binds the parameters by name (see `LOSSES`), so a comparison is a list of names.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit._util import ToolkitError

LOGCONF_MIN_BATCH = 32
"""Below this batch size the logconf threshold (a quantile of the batch) is too coarse to keep the
weak labels' class prior, so `logconf` warns. With a batch of one it is always the sample itself."""

LossFn = Callable[..., Tensor]
LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss with the common signature to `LOSSES` under `name`."""

    def add(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        return fn

    return add


def get_loss(name: str, **params) -> LossFn:
    """The loss `name` with `params` bound: call it as `fn(logits, w1, step=..., total_steps=...)`.

    Raises ToolkitError for an unknown name or a parameter the loss does not take."""
    if name not in LOSSES:
        raise ToolkitError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    fn = LOSSES[name]
    allowed = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("step", "total_steps")
    ]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ToolkitError(
            f"loss {name!r} takes no parameter {', '.join(unknown)}; it takes: {', '.join(allowed) or 'none'}"
        )
    return functools.partial(fn, **params)


def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse(spec: str) -> tuple[str, dict]:
    """A loss spec as (name, parameters): `logconf:alpha=0.75:threshold=quantile` -> ("logconf", {"alpha": 0.75,
    "threshold": "quantile"}) (numbers as floats, other values as words). The one parser of loss specs, for
    probes and fine-tuning alike. An unknown name or parameter, and a value the loss refuses (tried on a batch of
    four), is a one-line ToolkitError here, before any model work."""
    name, *pairs = str(spec).strip().split(":")
    try:
        params = {k.strip(): _value(v.strip()) for k, v in (p.split("=") for p in pairs)}
    except ValueError:
        raise ToolkitError(f"loss {spec!r}: parameters go as name:key=value:key=value") from None
    fn = get_loss(name, **params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # logconf's small-batch warning
            fn(torch.zeros(4, 2), torch.tensor([0.0, 1.0, 0.0, 1.0]), step=0, total_steps=1)
    except (ToolkitError, TypeError, ValueError, RuntimeError) as e:
        raise ToolkitError(f"loss {spec!r}: {e}") from None
    return name, params


def _prep(logits: Tensor, w1: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes and range; return logits [n, 2] (fp32 or wider) and weak targets w = (1 - w1, w1) [n, 2]."""
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ToolkitError(f"logits must have shape (n, 2), got {tuple(logits.shape)}")
    if w1.shape != logits.shape[:1]:
        raise ToolkitError(f"w1 must have shape ({logits.shape[0]},), got {tuple(w1.shape)}")
    if logits.shape[0] == 0:
        raise ToolkitError("empty batch")
    dtype = torch.promote_types(logits.dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays fp64
    w1 = w1.detach().to(device=logits.device, dtype=dtype)
    # One host sync per step: cheap next to a forward pass, and labels in {-1, 1} would train silently.
    if bool(((w1 < 0) | (w1 > 1) | w1.isnan()).any()):
        raise ToolkitError("w1 must be probabilities P(y=1) in [0, 1]")
    return logits.to(dtype), torch.stack([1 - w1, w1], dim=-1)


def _soft_ce(z: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of CE(z, target) = -sum_k target_k log softmax(z)_k; z, target: [n, 2]."""
    return -(target * F.log_softmax(z, dim=-1)).sum(-1).mean()


def _ramp(step: int, total_steps: int, warmup_frac: float) -> float:
    """Linear warm-up factor min(1, step / (warmup_frac * total_steps)); 1 throughout when warmup_frac = 0.

    Reaches exactly 1 at step = warmup_frac * total_steps (rounded to 9 decimals, so 0.7 * 10 counts as 7)."""
    if total_steps < 1 or step < 0:
        raise ToolkitError(f"need step >= 0 and total_steps >= 1, got step={step}, total_steps={total_steps}")
    if not 0 <= warmup_frac <= 1:
        raise ToolkitError(f"warmup_frac must be in [0, 1], got {warmup_frac}")
    warmup = round(warmup_frac * total_steps, 9)
    return 1.0 if warmup == 0 else min(1.0, step / warmup)


def harden(logits: Tensor, w1: Tensor, rule: str = "rank") -> Tensor:
    """Hardened predictions that keep the weak labels' class prior: Float[Tensor, "n"] in {0, 1}, detached.

    With p0 = softmax(logits)[:, 0] and q = mean(w1):
    - `rank` (the toolkit's): the k = round(q · n) examples with the smallest p0 get class 1, so the fraction
      hardened to class 1 is q up to rounding even when p0 ties (saturated softmax); ties by batch position.
    - `quantile` (openai/weak-to-strong's `logconf_loss_fn`, exactly): class 1 where p0 < t, t =
      `torch.quantile(p0, q)` in float32 (linear interpolation at position q · (n − 1)). That hardens
      ceil(q · (n − 1)) examples when p0 has no ties (q · (n − 1) itself when it is a whole number), one fewer
      than `rank` in some batches, and fewer still on ties (none of the tied examples at t is hardened)."""
    if rule not in ("rank", "quantile"):
        raise ToolkitError(f"harden rule must be rank or quantile, got {rule!r}")
    with torch.no_grad():
        z = logits.detach()
        p0 = torch.softmax(z.to(torch.promote_types(z.dtype, torch.float32)), dim=-1)[:, 0]
        if rule == "quantile":
            p0 = p0.float()
            return (p0 < torch.quantile(p0, w1.detach().float().mean().to(p0.device))).to(p0.dtype)
        n = p0.shape[0]
        k = int(math.floor(float(w1.float().mean()) * n + 0.5))
        hard = torch.zeros_like(p0)
        hard[torch.argsort(p0, stable=True)[:k]] = 1.0
    return hard


@register_loss("xent")
def xent(logits: Tensor, w1: Tensor, *, step: int, total_steps: int) -> Tensor:
    """Cross-entropy with the soft weak target: CE(z, (1 - w1, w1)). `step`, `total_steps` unused."""
    z, w = _prep(logits, w1)
    return _soft_ce(z, w)


@register_loss("logconf")
def logconf(
    logits: Tensor,
    w1: Tensor,
    *,
    step: int,
    total_steps: int,
    alpha: float = 0.5,
    warmup_frac: float = 0.2,
    min_batch: int = LOGCONF_MIN_BATCH,
    threshold: str = "rank",
) -> Tensor:
    """Auxiliary confidence loss (Burns et al. 2023, eq. 1): CE(z, (1 - c) w + c yhat).

    c = alpha * min(1, step / (warmup_frac * total_steps)) ramps linearly to exactly alpha at
    step = warmup_frac * total_steps and stays there (warmup_frac = 0: no warm-up).
    yhat = onehot(harden(z, w1, threshold)): the student's own predictions, thresholded so a mean(w1) fraction
    is class 1 (`threshold` `rank`, the default, or `quantile`, openai/weak-to-strong's exact rule, which
    `--recipe paper` uses; see `harden`). Warns when the batch is smaller than `min_batch`, where that quantile
    is unreliable. alpha in [0, 1] (paper: 0.5; 0.75 for the largest students).

    The warm-up is the paper's linear ramp over the first 20% of steps. openai/weak-to-strong's released
    `logconf_loss_fn` differs: its weight is alpha · step_frac up to step_frac = warmup_frac = 0.1 (so it reaches
    only 0.05 for alpha 0.5) and then jumps to alpha; their open PR #33 changes it to the ramp used here. The two
    agree after the warm-up."""
    if not 0 <= alpha <= 1:
        raise ToolkitError(f"logconf alpha must be in [0, 1], got {alpha}")
    z, w = _prep(logits, w1)
    c = alpha * _ramp(step, total_steps, warmup_frac)
    n = z.shape[0]
    if n < min_batch:
        warnings.warn(
            f"logconf on a batch of {n} < {min_batch}: the class-prior threshold is unreliable; "
            "use larger batches (gradient accumulation does not help: the threshold is per batch)",
            stacklevel=2,
        )
    hard = harden(z, w[:, 1], threshold)
    yhat = torch.stack([1 - hard, hard], dim=-1)
    return _soft_ce(z, (1 - c) * w + c * yhat)


@register_loss("product")
def product(
    logits: Tensor,
    w1: Tensor,
    *,
    step: int,
    total_steps: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    warmup_frac: float = 0.0,
) -> Tensor:
    """Product-of-experts target: CE(z, t), t ∝ p^beta_eff · w^alpha (normalised, detached), p = softmax(z).

    beta_eff = beta * min(1, step / (warmup_frac * total_steps)); the default warmup_frac = 0 means no
    warm-up (beta from step 0); with warm-up the loss starts as CE(z, w^alpha normalised), i.e. xent for
    alpha = 1. Computed in log space, so a hard label w1 in {0, 1} gives t = that label, never NaN."""
    if alpha < 0 or beta < 0:
        raise ToolkitError(f"product needs alpha, beta >= 0, got alpha={alpha}, beta={beta}")
    z, w = _prep(logits, w1)
    b = beta * _ramp(step, total_steps, warmup_frac)
    with torch.no_grad():
        # xlogy(alpha, 0) = -inf for alpha > 0 (that class gets 0) and 0 for alpha = 0 (w ignored).
        target = torch.softmax(b * F.log_softmax(z, dim=-1) + torch.xlogy(alpha, w), dim=-1)
    return _soft_ce(z, target)


@register_loss("window")
def window(logits: Tensor, w1: Tensor, *, step: int, total_steps: int, radius: float = 0.15) -> Tensor:
    """Confidence-window loss (EleutherAI/w2s's `window`): CE(z, w) on only the examples where the student is
    unsure, max(softmax(z)) < 0.5 + radius, summed and divided by the whole batch size n. An example the student
    is already confident about contributes 0 (and no gradient), whatever its weak label says: the student learns
    from the weak labels only where it has no opinion of its own. The window is chosen on the detached
    prediction. radius > 0; at 0.5 or more every example not saturated at exactly 1 is in the window (xent).
    w2s also sets the radius to the median weak-label confidence ("midweak"), a statistic of the whole training
    set, which this per-batch loss cannot see: pass `window:radius=<median |w1 - 0.5|>` instead."""
    if not radius > 0:
        raise ToolkitError(f"window radius must be > 0, got {radius}")
    z, w = _prep(logits, w1)
    unsure = (torch.softmax(z.detach(), dim=-1).amax(-1) < 0.5 + radius).to(z.dtype)
    return -(unsure * (w * F.log_softmax(z, dim=-1)).sum(-1)).sum() / z.shape[0]


@register_loss("entropy")
def entropy(
    logits: Tensor,
    w1: Tensor,
    *,
    step: int,
    total_steps: int,
    alpha: float = 0.5,
    warmup_frac: float = 0.2,
) -> Tensor:
    """Entropy regularisation: CE(z, w) + c · H(softmax(z)), H in nats, c ramped like `logconf`'s weight.

    Rewards confident predictions without the batch-level class-prior threshold of `logconf`, so it has no
    minimum batch size (but nothing keeps the class prior either). alpha >= 0.

    Not EleutherAI/w2s's `entropy`, which is its logconf with the student's soft prediction p in place of the
    hardened one: CE(z, (1 − c) w + c p) with p = softmax(z) detached. The gradient of that second term,
    c (softmax(z) − p), is zero, so w2s's `entropy` trains exactly as (1 − c) · xent: down-weighted xent, with
    no pull towards confidence. This one minimises the entropy itself."""
    if alpha < 0:
        raise ToolkitError(f"entropy alpha must be >= 0, got {alpha}")
    z, w = _prep(logits, w1)
    c = alpha * _ramp(step, total_steps, warmup_frac)
    logp = F.log_softmax(z, dim=-1)
    h = -(logp.exp() * logp).sum(-1).mean()
    return _soft_ce(z, w) + c * h


__all__ = [
    "LOGCONF_MIN_BATCH",
    "LOSSES",
    "entropy",
    "get_loss",
    "harden",
    "logconf",
    "parse",
    "product",
    "register_loss",
    "window",
    "xent",
]


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
