"""Contrastive Representation Clustering (Burns et al. 2022's CRC, as EleutherAI/elk-generalization fits it), a
label-free method.

Per layer, the pseudo-label (which label word completes the prompt) is erased from the contrast-pair features
with LEACE (Belrose et al. 2023, `concept_erasure`, the reference's own eraser, fitted on strong_train's two
halves), and the direction is the top principal component of the erased pairs' differences (class-1 completion
minus class-0), centred. The reference takes it with `torch.pca_lowrank` (randomised); here it is the exact
singular vector, so that a seed gives the same direction on every machine (equal up to sign, checked in
tests/test_directions.py). An example's score is its erased difference projected on the direction; its sign and
layer come from the weak labels of val (`toolkit.directions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from toolkit.directions import DirectionMethod
from toolkit.methods import register

__all__ = ["CrcOptions", "crc_direction"]


@dataclass(frozen=True)
class CrcOptions:
    """Contrastive Representation Clustering: the top principal direction of the erased contrast differences."""


def crc_direction(x0: torch.Tensor, x1: torch.Tensor):
    """(direction (d,), eraser) of one layer's contrast halves x0, x1 (n, d)."""
    from concept_erasure import LeaceEraser

    n = len(x0)
    eraser = LeaceEraser.fit(x=torch.stack([x0, x1], 1).flatten(0, 1),
                             z=torch.stack([x0.new_zeros(n), x0.new_ones(n)], 1).flatten())
    diff = eraser(x1) - eraser(x0)
    _, _, vh = torch.linalg.svd(diff - diff.mean(0), full_matrices=False)
    return vh[0], eraser


@register
class CrcMethod(DirectionMethod):
    """CRC: the top principal direction of the contrast differences, after erasing the completion's label word."""

    name = "crc"
    order = 11
    Options = CrcOptions
    contrast = True

    def scores(self, train, evals, opts: CrcOptions, seed: int, device: str) -> dict[str, np.ndarray]:
        neg, pos = (torch.as_tensor(a, device=device) for a in train)
        fits = [crc_direction(neg[li], pos[li]) for li in range(len(neg))]
        out = {}
        for split, (x0, x1) in evals.items():
            x0, x1 = torch.as_tensor(x0, device=device), torch.as_tensor(x1, device=device)
            out[split] = torch.stack([(eraser(x1[li]) - eraser(x0[li])) @ w
                                      for li, (w, eraser) in enumerate(fits)]).double().cpu().numpy()
        return out
