"""HR@K and NDCG@K from hit ranks, with the papers' definitions.

rank = position (0-based) of the first returned beam whose SID equals the
target's SID, or -1 when no beam matches; HR@K = 1[0 <= rank < K];
NDCG@K = 1/log2(rank + 2) when 0 <= rank < K, else 0 (one relevant item, so
the ideal DCG is 1).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from sidjax.utils.errors import DataError

DEFAULT_KS = (1, 3, 5, 10, 20, 50)
# Per-sample hit ranks of a scored split, by split name: what `experiments.report` bootstraps
# (the eval stage writes one; the baselines stage one per method, `ranks_<method>.npz`).
RANKS_FILE = "ranks.npz"


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


def per_user(ranks: Iterable[int] | np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> tuple[list[str], np.ndarray]:
    """Metric names (HR@K..., NDCG@K...) and each user's value of each: float64 [n, metrics]."""
    ranks = np.asarray(list(ranks) if not isinstance(ranks, np.ndarray) else ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"per_user: ranks must be a non-empty 1-d array, got shape {ranks.shape}")
    ks = sorted(set(int(k) for k in ks))
    if ks[0] < 1:
        raise ValueError(f"per_user: K must be >= 1, got {ks[0]}")
    hit = ranks >= 0
    gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    names, columns = [], []
    for name, value in (("HR", 1.0), ("NDCG", gain)):
        for k in ks:
            names.append(f"{name}@{k}")
            columns.append(np.where(hit & (ranks < k), value, 0.0))
    return names, np.stack(columns, axis=1)


def ranking_metrics(ranks: Iterable[int] | np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@K and NDCG@K over users given each user's hit rank (-1 = miss)."""
    names, values = per_user(ranks, ks)
    means = dict(zip(names, values.mean(axis=0).tolist()))
    return {name: means[name] for k in sorted(set(int(k) for k in ks)) for name in (f"HR@{k}", f"NDCG@{k}")}


def write_ranks(path: str | os.PathLike, ranks: Mapping[str, np.ndarray]) -> None:
    """Write {split: int32 ranks [n]} to `path` whole or not at all (a temporary file, then a rename)."""
    path = Path(path)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as f:
        np.savez(f, **{split: np.asarray(r, np.int32) for split, r in ranks.items()})
    os.replace(partial, path)


def read_ranks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{split: ranks} from `write_ranks`; a missing, truncated or damaged file is a `DataError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {split: f[split] for split in f.files}
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise DataError(path, f"is not a readable ranks file (truncated or damaged: {e})") from None


def format_table(metrics: dict[str, float], ks: Iterable[int]) -> str:
    """A two-row text table (HR and NDCG per K) for logs and the console."""
    ks = sorted(set(int(k) for k in ks))
    header = "        " + "".join(f"{'@' + str(k):>9}" for k in ks)
    rows = [header]
    for name in ("HR", "NDCG"):
        rows.append(f"{name:<8}" + "".join(f"{metrics[f'{name}@{k}']:>9.4f}" for k in ks))
    return "\n".join(rows)
