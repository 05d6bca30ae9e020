"""Reference recommenders (popularity, SASRec, item Markov chain) scored with the pipeline's own metric code.

Baselines rank items, not SIDs: a hit is the target item itself among the top K,
so items that share a SID never count for each other (at most as strict as the
SID-level metric of the generative models).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from sidjax.utils.ranking import hit_ranks, ranking_metrics


def item_metrics(top_items: np.ndarray, targets: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """HR@K / NDCG@K of ranked item lists int [n, K] (best first) against target items int [n]."""
    top_items = np.asarray(top_items)
    targets = np.asarray(targets)
    ks = tuple(ks)
    if top_items.ndim != 2 or top_items.shape[0] != targets.shape[0] or top_items.shape[1] < max(ks):
        raise ValueError(f"item_metrics: top_items {top_items.shape} must be [n={targets.shape[0]}, >= {max(ks)}]")
    ranks = hit_ranks(top_items[:, :, None], targets[:, None])
    metrics = ranking_metrics(ranks, ks)
    metrics["users"] = float(targets.shape[0])
    return metrics
