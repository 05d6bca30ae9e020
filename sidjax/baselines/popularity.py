"""Most-popular baseline: every user gets the items most often bought in the train split."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from sidjax.baselines import item_metrics
from sidjax.data.dataset import Split


def train_counts(train: Split, num_items: int) -> np.ndarray:
    """Purchases per item in the train split: each train target is one interaction."""
    return np.bincount(train.target, minlength=num_items).astype(np.int64)


def ranking(counts: np.ndarray) -> np.ndarray:
    """Item ids, most popular first; ties go to the lower id so the order is deterministic."""
    return np.argsort(-counts, kind="stable").astype(np.int32)


def evaluate(counts: np.ndarray, split: Split, ks: Iterable[int]) -> dict[str, float]:
    """HR@K / NDCG@K of the popularity ranking on one split."""
    ks = tuple(ks)
    top = ranking(counts)[: max(ks)]
    return item_metrics(np.broadcast_to(top, (len(split), top.shape[0])), split.target, ks)
