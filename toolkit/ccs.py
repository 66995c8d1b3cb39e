"""Contrast-Consistent Search (Burns et al. 2022, "Discovering Latent Knowledge"), a label-free method.

Per layer, a linear map of the contrast-pair features (the prompt completed with each label word), each half
centred by its own strong_train mean, is fitted so that the two completions' probabilities are consistent
(p0 = 1 - p1) and confident (one of them near 0): loss mean((p0 - (1 - p1))^2) + mean(min(p0, p1)^2), plus
`weight_decay` * (|w|^2 + b^2) / 2, minimised by L-BFGS with a strong-Wolfe line search from `tries` random
starts; the start with the lowest unregularised loss wins. These are EleutherAI/elk-generalization's choices
(its `CcsReporter` with the default `ccs` loss, `meanonly` normalisation and `lbfgs`), checked against it in
tests/test_directions.py. One difference: val and test are centred by strong_train's means, where elk centres
every batch by its own (which would make a test prediction depend on the other test examples).

The score of an example is the logit of its class-1 completion minus that of its class-0 completion; its sign
and layer come from the weak labels of val (`toolkit.directions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from toolkit._util import ToolkitError, rng
from toolkit.config import flag
from toolkit.directions import DirectionMethod
from toolkit.methods import register

__all__ = ["CcsOptions", "ccs_loss", "fit_direction"]

START_SALT = 41
"""Salt of the random starts' generator (`_util.rng`), apart from every other draw of the seed."""


@dataclass(frozen=True)
class CcsOptions:
    """Contrast-Consistent Search on contrast pairs, one direction per layer."""

    ccs_tries: int = 10
    """Random starts per layer; the one with the lowest loss is kept."""
    ccs_weight_decay: float = 0.01
    """L2 penalty on the direction and its bias, (w^2 + b^2) / 2 times this."""
    ccs_max_iter: int = 1000
    """L-BFGS iterations per start."""
    ccs_bias: bool = flag(True)
    """Fit a bias beside the direction."""

    def __post_init__(self) -> None:
        if self.ccs_tries < 1 or self.ccs_max_iter < 1 or self.ccs_weight_decay < 0:
            raise ToolkitError(f"ccs needs ccs_tries >= 1, ccs_max_iter >= 1 and ccs_weight_decay >= 0, got "
                               f"{self.ccs_tries}, {self.ccs_max_iter} and {self.ccs_weight_decay}")


def ccs_loss(logit0, logit1):
    """The CCS loss of contrast-pair logits (torch tensors): consistency plus confidence, both squared."""
    p0, p1 = logit0.sigmoid(), logit1.sigmoid()
    return (p0 - (1 - p1)).square().mean() + torch.minimum(p0, p1).square().mean()


def fit_direction(x0, x1, w0, b0, *, weight_decay: float = 0.01, max_iter: int = 1000, bias: bool = True):
    """One L-BFGS fit of (w, b) from (w0, b0) on centred contrast halves x0, x1 (n, d) torch tensors; returns
    (w, b, loss): the loss unregularised, as the closure last evaluated it (the reference's bookkeeping)."""
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(bias)
    params = [w, b] if bias else [w]
    eps = torch.finfo(x0.dtype).eps
    opt = torch.optim.LBFGS(params, line_search_fn="strong_wolfe", max_iter=max_iter, tolerance_change=eps,
                            tolerance_grad=eps)
    last = [float("inf")]

    def closure():
        opt.zero_grad()
        loss = ccs_loss(x0 @ w + b, x1 @ w + b)
        reg = sum(weight_decay * p.norm() ** 2 / 2 for p in params)
        (loss + reg).backward()
        last[0] = float(loss.detach())
        return float((loss + reg).detach())

    opt.step(closure)
    return w.detach(), b.detach(), last[0]


@register
class CcsMethod(DirectionMethod):
    """CCS: a consistent, confident direction of the contrast pairs per layer, found without labels."""

    name = "ccs"
    order = 10
    Options = CcsOptions
    contrast = True

    def scores(self, train, evals, opts: CcsOptions, seed: int, device: str) -> dict[str, np.ndarray]:
        neg, pos = (torch.as_tensor(a, device=device) for a in train)
        mean0, mean1 = neg.mean(1, keepdim=True), pos.mean(1, keepdim=True)
        neg, pos = neg - mean0, pos - mean1
        n_layers, _, d = neg.shape
        gen = rng(seed, START_SALT)
        directions = []
        for li in range(n_layers):
            best = (float("inf"), None, None)
            for _ in range(opts.ccs_tries):
                # nn.Linear's default start, as the reference's: U(-1/sqrt(d), 1/sqrt(d)) for weight and bias
                start = torch.as_tensor(gen.uniform(-1, 1, d + 1) / np.sqrt(d), dtype=neg.dtype, device=device)
                w, b, loss = fit_direction(neg[li], pos[li], start[:d], start[d] * opts.ccs_bias,
                                           weight_decay=opts.ccs_weight_decay, max_iter=opts.ccs_max_iter,
                                           bias=opts.ccs_bias)
                if loss < best[0]:
                    best = (loss, w, b)
            if best[1] is None:
                raise ToolkitError(f"ccs: every start gave a non-finite loss on layer index {li}")
            directions.append(best[1])
        W = torch.stack(directions)  # (L, d)
        out = {}
        for split, (x0, x1) in evals.items():
            x0 = torch.as_tensor(x0, device=device) - mean0
            x1 = torch.as_tensor(x1, device=device) - mean1
            # logit(class 1) - logit(class 0): the bias cancels
            out[split] = torch.einsum("lnd,ld->ln", x1 - x0, W).double().cpu().numpy()
        return out
