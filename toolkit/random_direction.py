"""A random direction per layer (Gaussian, drawn from the seed): the label-free floor below PCA. Whatever it
recovers is what a direction with no information, given a sign and a layer by the weak labels of val
(`toolkit.directions`), recovers; a label-free method has to beat it to claim anything."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit._util import rng
from toolkit.directions import DirectionMethod, projections
from toolkit.methods import register

__all__ = ["RandomOptions"]

DIRECTION_SALT = 43
"""Salt of the directions' generator (`_util.rng`), apart from every other draw of the seed."""


@dataclass(frozen=True)
class RandomOptions:
    """A random direction of the strong model's plain features, per layer (the floor)."""


@register
class RandomMethod(DirectionMethod):
    """A Gaussian random direction per layer, drawn from the seed."""

    name = "random"
    order = 13
    Options = RandomOptions

    def scores(self, train, evals, opts: RandomOptions, seed: int, device: str) -> dict[str, np.ndarray]:
        n_layers, _, d = train.shape
        return projections(train, evals, rng(seed, DIRECTION_SALT).standard_normal((n_layers, d)))
