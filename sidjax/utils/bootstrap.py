"""Paired bootstrap over users: 95 % intervals for HR@K / NDCG@K and for differences between two models.

Each resample draws the split's users with replacement (multinomial counts, so one matrix product
gives every resample's means); a difference reuses the same draw for both models, so it measures
A vs B on the same users. Percentile intervals; a fixed seed makes a report reproducible.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from sidjax.utils.ranking import per_user

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float  # on all users
    low: float  # 2.5th percentile of the resampled values
    high: float  # 97.5th percentile

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _resample_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    n = values.shape[0]
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    return counts @ values / n  # [resamples, metrics]


def _estimates(names: list[str], values: np.ndarray, resamples: int, seed: int) -> dict[str, Estimate]:
    if resamples < 1:
        raise ValueError(f"bootstrap: resamples must be >= 1, got {resamples}")
    means = _resample_means(values, resamples, seed)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    point = values.mean(axis=0)
    return {name: Estimate(float(point[i]), float(low[i]), float(high[i])) for i, name in enumerate(names)}


def intervals(ranks: np.ndarray, ks: Iterable[int], resamples: int = DEFAULT_RESAMPLES,
              seed: int = DEFAULT_SEED) -> dict[str, Estimate]:
    """HR@K / NDCG@K of one model's per-user hit ranks (-1 = miss), each with its 95 % interval."""
    names, values = per_user(ranks, ks)
    if values.shape[0] == 0:
        raise ValueError("bootstrap: no users")
    return _estimates(names, values, resamples, seed)


def paired_difference(ranks_a: np.ndarray, ranks_b: np.ndarray, ks: Iterable[int],
                      resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, Estimate]:
    """A minus B per metric on the same users (rank arrays in the same user order), with 95 % intervals."""
    if np.shape(ranks_a) != np.shape(ranks_b):
        raise ValueError(f"paired_difference: the two rank arrays cover other users ({np.shape(ranks_a)[0]} "
                         f"vs {np.shape(ranks_b)[0]})")
    names, a = per_user(ranks_a, ks)
    _, b = per_user(ranks_b, ks)
    return _estimates(names, a - b, resamples, seed)
