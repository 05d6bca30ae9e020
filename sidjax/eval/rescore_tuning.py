"""Choosing the dense re-scorers' weights from an eval's saved beams, without searching again.

An eval written without re-scoring keeps every beam of every user (`<split>.jsonl`: SID, score,
items). Re-scoring only adds weight x log P_dense(SID) per dense model and sorts again
(`sidjax.eval.rescore.DenseRescorer.rescore`), so each point of a weight grid is a re-sort of
those beams (`experiments.tune_rescore` is the command).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

from sidjax.eval.saved_beams import beam_arrays, read_records
from sidjax.utils.ranking import hit_ranks, ranking_metrics


def read_beams(path: Path) -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Histories, beam scores f64 [n, B] (-inf pads), beam items int32 [n, B, S] (-1 pads), beam SID strings
    (object [n, B]) and target SID strings [n] from an eval's `<split>.jsonl`."""
    return beam_arrays(read_records(path))


def fused_ranks(scores: np.ndarray, dense: list[np.ndarray], weights: tuple[float, ...], sids: np.ndarray,
                targets: np.ndarray) -> np.ndarray:
    """The target's rank after re-scoring (as `DenseRescorer.rescore`: stable sort, pads last): int32 [n]."""
    fused = scores.copy()
    for log_probs, weight in zip(dense, weights):
        if weight:
            fused = fused + weight * log_probs
    fused = np.where(np.isfinite(scores), fused, -np.inf)
    order = np.argsort(-fused, axis=1, kind="stable")
    return hit_ranks(np.take_along_axis(sids, order, axis=1)[:, :, None], targets[:, None])


def grid_search(scores: np.ndarray, dense: Sequence[np.ndarray], grid: Sequence[float], sids: np.ndarray,
                targets: np.ndarray, ks: Sequence[int]) -> list[dict]:
    """Every point of `grid` ^ len(dense) with its metrics, best NDCG@10 (then HR@10) first."""
    rows = []
    for weights in itertools.product(grid, repeat=len(dense)):
        metrics = ranking_metrics(fused_ranks(scores, dense, weights, sids, targets), ks)
        rows.append({"weights": list(weights), **metrics})
    rows.sort(key=lambda r: (-r["NDCG@10"], -r["HR@10"]))
    return rows
