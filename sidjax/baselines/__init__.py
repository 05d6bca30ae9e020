"""Reference recommenders (popularity, SASRec, item Markov chain) scored with the pipeline's own metric code.

Baselines rank items, the SID models rank SIDs. On one yardstick (`score`), an item ranking
becomes a SID ranking first: each SID counts once, at the first item that carries it, and a hit
is the target's SID among the top K, as for the SID models. Without SIDs (a run with no `sids`
entry) a hit is the target item itself (item level), which is stricter when items share a SID.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from sidjax.utils.ranking import hit_ranks, ranking_metrics


def _check(top_items: np.ndarray, targets: np.ndarray, k: int, caller: str) -> None:
    if top_items.ndim != 2 or top_items.shape[0] != targets.shape[0] or top_items.shape[1] < k:
        raise ValueError(f"{caller}: top_items {top_items.shape} must be [n={targets.shape[0]}, >= {k}]")


def item_ranks(top_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Position of the target item in each ranked list int [n, D] (best first), -1 when absent: int32 [n]."""
    return hit_ranks(np.asarray(top_items)[:, :, None], np.asarray(targets)[:, None])


def item_metrics(top_items: np.ndarray, targets: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """HR@K / NDCG@K of ranked item lists int [n, K] (best first) against target items int [n], item level."""
    top_items, targets, ks = np.asarray(top_items), np.asarray(targets), tuple(ks)
    _check(top_items, targets, max(ks), "item_metrics")
    return {**ranking_metrics(item_ranks(top_items, targets), ks), "users": float(targets.shape[0])}


def sid_groups(sids: np.ndarray) -> np.ndarray:
    """Per item, the id of its SID (items that share a SID share the id): int64 [num_items]."""
    sids = np.asarray(sids)
    if sids.ndim != 2:
        raise ValueError(f"sid_groups: sids {sids.shape} must be [num_items, levels]")
    return np.unique(sids, axis=0, return_inverse=True)[1].reshape(-1)


def ranking_depth(ks: Iterable[int], groups: np.ndarray | None) -> int:
    """How many items to rank so that the list holds max(K) distinct SIDs, whatever the collisions."""
    k = max(ks)
    if groups is None:
        return k
    largest = int(np.bincount(groups).max())
    return min(len(groups), k * largest)


def sid_ranks(top_items: np.ndarray, targets: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Rank of the target's SID in each item list int [n, D] once every SID counts only at its first item:
    int32 [n], -1 when it is not among the first `k` distinct SIDs.

    Raises when a list that misses the target holds fewer than `k` distinct SIDs (too short to tell).
    """
    top_items, targets = np.asarray(top_items), np.asarray(targets)
    _check(top_items, targets, k, "sid_ranks")
    g = groups[top_items]  # [n, D]
    order = np.argsort(g, axis=1, kind="stable")
    ordered = np.take_along_axis(g, order, axis=1)
    first_sorted = np.ones_like(ordered, dtype=bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.zeros_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    position = np.cumsum(first, axis=1) - 1  # the SID-level rank of each list entry's SID
    match = g == groups[targets][:, None]
    found = match.any(axis=1)
    rank = np.take_along_axis(position, match.argmax(axis=1)[:, None], axis=1)[:, 0]
    short = ~found & (position[:, -1] + 1 < k)
    if short.any():
        raise ValueError(f"sid_ranks: {int(short.sum())} item lists hold fewer than {k} distinct SIDs; "
                         f"rank more items (ranking_depth)")
    return np.where(found & (rank < k), rank, -1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Scored:
    """One split's scores on the yardstick (`level`), and the per-sample ranks they come from."""

    level: str  # "sid" or "item"
    metrics: dict[str, float]  # HR@K / NDCG@K and "users" at `level`
    ranks: np.ndarray  # int32 [n], -1 = miss
    item_level: dict[str, float]  # the same list scored at item level (the target item itself)


def score(top_items: np.ndarray, targets: np.ndarray, ks: Iterable[int], groups: np.ndarray | None) -> Scored:
    """Score ranked item lists (at least `ranking_depth(ks, groups)` long) at SID level when `groups` is given."""
    top_items, targets, ks = np.asarray(top_items), np.asarray(targets), tuple(ks)
    k = max(ks)
    item = item_metrics(top_items[:, :k], targets, ks)
    if groups is None:
        return Scored("item", item, item_ranks(top_items[:, :k], targets), item)
    ranks = sid_ranks(top_items, targets, groups, k)
    return Scored("sid", {**ranking_metrics(ranks, ks), "users": float(targets.shape[0])}, ranks, item)
