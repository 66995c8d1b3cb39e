"""The top principal direction of the plain features, per layer: a label-free floor that every paper of the
CCS line reports. Its sign and layer come from the weak labels of val (`toolkit.directions`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.directions import DirectionMethod, projections
from toolkit.methods import register

__all__ = ["PcaOptions", "top_direction"]


@dataclass(frozen=True)
class PcaOptions:
    """The top principal direction of the strong model's plain features, per layer."""


def top_direction(X: np.ndarray) -> np.ndarray:
    """The top right singular vector of `X` (n, d) centred, in float64."""
    X = np.asarray(X, dtype=np.float64)
    return np.linalg.svd(X - X.mean(0), full_matrices=False)[2][0]


@register
class PcaMethod(DirectionMethod):
    """PCA: the direction of the most variance in strong_train's features, per layer, without labels."""

    name = "pca"
    order = 12
    Options = PcaOptions

    def scores(self, train, evals, opts: PcaOptions, seed: int, device: str) -> dict[str, np.ndarray]:
        return projections(train, evals, np.stack([top_direction(layer) for layer in train]))
