"""HR@K and NDCG@K from hit ranks, with the papers' definitions.

rank = position (0-based) of the first returned beam whose SID equals the
target's SID, or -1 when no beam matches; HR@K = 1[0 <= rank < K];
NDCG@K = 1/log2(rank + 2) when 0 <= rank < K, else 0 (one relevant item, so
the ideal DCG is 1).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def hit_ranks(predicted_sids: np.ndarray, target_sids: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Rank of the target among the beams: int32 [n], -1 when it is not there.

    predicted_sids: int [n, B, L] beams best first; target_sids: int [n, L];
    valid: bool [n, B] (beams that hold a real SID), default all.
    """
    predicted_sids = np.asarray(predicted_sids)
    target_sids = np.asarray(target_sids)
    if predicted_sids.ndim != 3 or target_sids.shape != (predicted_sids.shape[0], predicted_sids.shape[2]):
        raise ValueError(
            f"hit_ranks: predicted_sids {predicted_sids.shape} must be [n, B, L] and target_sids {target_sids.shape} [n, L]"
        )
    match = (predicted_sids == target_sids[:, None, :]).all(axis=-1)
    if valid is not None:
        match &= np.asarray(valid, dtype=bool)
    first = match.argmax(axis=1)
    return np.where(match.any(axis=1), first, -1).astype(np.int32)


def ranking_metrics(ranks: Iterable[int] | np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@K and NDCG@K over users given each user's hit rank (-1 = miss)."""
    ranks = np.asarray(list(ranks) if not isinstance(ranks, np.ndarray) else ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranking_metrics: ranks must be a non-empty 1-d array, got shape {ranks.shape}")
    hit = ranks >= 0
    gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    out: dict[str, float] = {}
    for k in sorted(set(int(k) for k in ks)):
        if k < 1:
            raise ValueError(f"ranking_metrics: K must be >= 1, got {k}")
        within = hit & (ranks < k)
        out[f"HR@{k}"] = float(within.mean())
        out[f"NDCG@{k}"] = float(np.where(within, gain, 0.0).mean())
    return out


def format_table(metrics: dict[str, float], ks: Iterable[int]) -> str:
    """A two-row text table (HR and NDCG per K) for logs and the console."""
    ks = sorted(set(int(k) for k in ks))
    header = "        " + "".join(f"{'@' + str(k):>9}" for k in ks)
    rows = [header]
    for name in ("HR", "NDCG"):
        rows.append(f"{name:<8}" + "".join(f"{metrics[f'{name}@{k}']:>9.4f}" for k in ks))
    return "\n".join(rows)
