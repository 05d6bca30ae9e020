"""Citations a generated text may make: every SID it writes is one of a given set (a user's history).

The final answer is searched over the trie of real items; a reasoning, sampled freely, can name SIDs
that are no item at all, or items the user never saw. With citations the sampler writes a SID only
as a whole path of one of its row's allowed SIDs: a first-level token starts one, each later token
must continue a SID that still matches, and text resumes once the SID is complete. Text between
SIDs is free. The teacher's reasoning cites only history items (GREAM's evidence and denoised
history; SIDReasoner's analyst names history items by SID and never the next item), so the
constraint keeps the model's reasoning inside what it was trained to write.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Citations:
    """The SIDs each row may cite, as token ids, and the SID level of every vocabulary token."""

    sids: jax.Array  # int32 [rows, H, L]: token ids of each row's allowed SIDs; -1 pads
    token_level: jax.Array  # int32 [V]: the SID level a token belongs to, -1 for text tokens

    def repeat(self, n: int) -> "Citations":
        """One row per sample: each prompt's citations repeated for its `n` samples."""
        return Citations(jnp.repeat(self.sids, n, axis=0), self.token_level)


def token_levels(vocab: int, level_offsets: Sequence[int], level_sizes: Sequence[int]) -> np.ndarray:
    """int32 [vocab]: each SID token's level, -1 for every other token."""
    levels = np.full(vocab, -1, np.int32)
    for level, (offset, size) in enumerate(zip(level_offsets, level_sizes)):
        levels[offset:offset + size] = level
    return levels


def history_citations(codes: np.ndarray, histories: Sequence[Sequence[int]], level_offsets: Sequence[int],
                      token_level: np.ndarray, bucket: int = 16) -> Citations:
    """Citations of each history's own items (host arrays); `codes` int [items, L] are the items' SID codes.

    The history axis is padded to a multiple of `bucket` so few shapes compile.
    """
    longest = max(len(h) for h in histories)
    width = -(-longest // bucket) * bucket
    sids = np.full((len(histories), width, codes.shape[1]), -1, np.int32)
    for row, history in enumerate(histories):
        sids[row, :len(history)] = codes[np.asarray(history)] + np.asarray(level_offsets, np.int32)
    return Citations(sids, token_level)


def start(citations: Citations) -> tuple[jax.Array, jax.Array]:
    """Each row outside any SID: depth 0 (tokens of the SID being written) and no candidate yet."""
    return jnp.zeros(citations.sids.shape[:1], jnp.int32), jnp.zeros(citations.sids.shape[:2], bool)


def allowed(citations: Citations, depth: jax.Array, match: jax.Array) -> jax.Array:
    """bool [rows, V]: outside a SID, text and the first tokens of allowed SIDs; inside, only the next
    token of an allowed SID that matches what was written so far."""
    rows, _, levels = citations.sids.shape
    vocab = citations.token_level.shape[0]
    at_depth = jnp.take_along_axis(citations.sids, jnp.minimum(depth, levels - 1)[:, None, None], axis=2)[:, :, 0]
    outside = depth == 0
    candidate = jnp.where(outside[:, None], True, match) & (at_depth >= 0)
    sid_ok = jnp.zeros((rows, vocab + 1), bool).at[jnp.arange(rows)[:, None], jnp.where(candidate, at_depth, vocab)]
    text_ok = (citations.token_level < 0)[None, :] & outside[:, None]
    return sid_ok.set(True)[:, :vocab] | text_ok


def advance(citations: Citations, depth: jax.Array, match: jax.Array, token: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
    """The state after each row wrote `token` (a token `allowed` permitted)."""
    levels = citations.sids.shape[2]
    at_depth = jnp.take_along_axis(citations.sids, depth[:, None, None], axis=2)[:, :, 0]
    is_sid = citations.token_level[token] >= 0
    written = at_depth == token[:, None]
    match = jnp.where((depth == 0)[:, None], written, match & written)
    depth = jnp.where(is_sid, (depth + 1) % levels, depth)
    return depth, match
