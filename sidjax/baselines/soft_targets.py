"""Soft next-item targets from the item Markov chain, for distilling it into a SID-sequence model's SFT.

The chain knows which item follows which across users; the SID model learns that only from each
position's own next item. With `sft.distill_weight` > 0 every SID token of a `sidseq` target also
learns the chain's distribution over that level's codes, given the target's true codes at the
earlier levels (as teacher forcing feeds them), cut to the `top_k` likeliest codes and renormalised.
Inference stays purely generative: the chain is used in training only.

Each train transition is predicted with itself left out of the chain's counts
(`MarkovChain.probs(leave_out=)`), so a soft target says what the other users did next, as the chain
would for a valid or test user, instead of repeating the position's own answer.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse

from sidjax.baselines.markov import MarkovChain
from sidjax.data.formatting import Encoded
from sidjax.data.tasks import Example

_CHUNK_ENTRIES = 1 << 22


class _Positions:
    """The response items of every example with items: their history, target and token rows."""

    def __init__(self, pairs: Sequence[tuple[Example, Encoded]], sids: np.ndarray, level_offsets: np.ndarray,
                 context: int):
        levels = sids.shape[1]
        self.example, self.rows, self.history, self.history_len, self.target = [], [], [], [], []
        for index, (example, encoded) in enumerate(pairs):
            if not example.items:
                continue
            rows = np.flatnonzero(encoded.loss_mask)
            count = rows.size // levels
            items = example.items
            if rows.size % levels or not 0 < count < len(items):
                raise ValueError(f"a '{example.task}' example's response ({rows.size} tokens) is not the SIDs of "
                                 f"{len(items) - 1} or fewer of its {len(items)} items at {levels} tokens each")
            expected = (level_offsets[None, :] + sids[list(items[-count:])]).reshape(-1)
            if not np.array_equal(encoded.input_ids[rows], expected):
                raise ValueError(f"a '{example.task}' example's response tokens are not the SIDs of its items "
                                 f"{list(items[-count:])}")
            for q in range(count):
                j = len(items) - count + q
                history = items[max(0, j - context):j]
                self.example.append(index)
                self.rows.append(rows[q * levels:(q + 1) * levels])
                self.history.append(list(history) + [0] * (context - len(history)))
                self.history_len.append(len(history))
                self.target.append(items[j])


def _code_matrices(sids: np.ndarray, level_sizes: Sequence[int]) -> list[scipy.sparse.csr_matrix]:
    """Per level, the one-hot [items, size_l] map of each item to its code there."""
    rows = np.arange(len(sids))
    return [scipy.sparse.csr_matrix((np.ones(len(sids)), (rows, sids[:, level])), shape=(len(sids), size))
            for level, size in enumerate(level_sizes)]


def _level_distributions(probs: np.ndarray, targets: np.ndarray, sids: np.ndarray,
                         code_matrices: Sequence[scipy.sparse.csr_matrix]) -> list[np.ndarray]:
    """Per level l, P(code at l | the target's codes before l) under `probs` [n, items]: [n, size_l] each."""
    out = []
    match = np.ones(probs.shape, dtype=bool)
    for level, code_of_item in enumerate(code_matrices):
        by_code = np.asarray((code_of_item.T @ (probs * match).T).T)
        out.append(by_code / np.maximum(by_code.sum(axis=1, keepdims=True), 1e-30))
        match &= sids[None, :, level] == sids[targets, level][:, None]
    return out


def soft_targets(pairs: Sequence[tuple[Example, Encoded]], sids: np.ndarray, level_offsets: np.ndarray,
                 level_sizes: Sequence[int], chain: MarkovChain, top_k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per example: (token ids int32 [T, top_k], weights f32 [T, top_k]), row t the target of token t.

    Rows with no teacher (prompt tokens, examples without items) hold the token itself at weight 1, so
    the soft loss there equals the hard one.
    """
    sids, level_offsets = np.asarray(sids), np.asarray(level_offsets)
    top_k = min(top_k, min(level_sizes))
    out = []
    for _, encoded in pairs:
        ids = np.zeros((len(encoded.input_ids), top_k), np.int32)
        weights = np.zeros((len(encoded.input_ids), top_k), np.float32)
        ids[:, 0], weights[:, 0] = encoded.input_ids, 1.0
        out.append((ids, weights))
    positions = _Positions(pairs, sids, level_offsets, chain.config.context)
    history, history_len = np.asarray(positions.history), np.asarray(positions.history_len)
    targets = np.asarray(positions.target)
    chunk = max(1, _CHUNK_ENTRIES // len(sids))  # positions a chunk: its dense [chunk, items] arrays stay small
    code_matrices = _code_matrices(sids, level_sizes)
    for start in range(0, targets.size, chunk):
        span = slice(start, start + chunk)
        probs = chain.probs(history[span], history_len[span], leave_out=targets[span])
        for level, dist in enumerate(_level_distributions(probs, targets[span], sids, code_matrices)):
            top = np.argsort(-dist, axis=1, kind="stable")[:, :top_k]
            mass = np.take_along_axis(dist, top, axis=1)
            mass /= np.maximum(mass.sum(axis=1, keepdims=True), 1e-30)
            for n, p in enumerate(range(start, start + len(top))):
                ids, weights = out[positions.example[p]]
                row = positions.rows[p][level]
                ids[row], weights[row] = level_offsets[level] + top[n], mass[n]
    return out
