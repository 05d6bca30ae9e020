"""Constrained SID beam search: the top-B real SIDs per prompt, in one jitted call.

After the prompt, exactly L SID tokens are decoded. At level l a beam sitting on
trie node n may only extend with `codes[l][n]`, so each step scores
`level_offsets[l] + codes[l][n]` per beam and takes the top-B over
beams x allowed codes (never over the vocabulary). Each prompt is prefilled ONCE;
its KV cache is the read-only `prefix` the model shares across the prompt's B
beams, which only cache their own (at most L - 1) SID tokens. Scores are sums of
log-probabilities with length penalty 0, as in the papers' evaluation.

Static shapes throughout (levels are unrolled; L is small), no host sync; the
first level may have fewer valid codes than beams: the candidates are padded with
invalid ones and invalid beams come back with `valid=False`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.decode.options import NORMALIZATIONS
from sidjax.model.transformer import CausalLM, KVCache, positions_from_mask
from sidjax.sid.codes import SidTrie


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrieTables:
    """The device-side trie: per level `codes` / `next_node` [n_l, B_l] and each level's token offset."""

    codes: tuple[jax.Array, ...]
    next_node: tuple[jax.Array, ...]
    level_offsets: jax.Array  # int32 [L]
    level_sizes: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))

    @classmethod
    def from_trie(cls, trie: SidTrie, level_offsets: Sequence[int]) -> "TrieTables":
        offsets = np.asarray(level_offsets, dtype=np.int32)
        if offsets.shape != (trie.num_levels,):
            raise ValueError(f"level_offsets {offsets.tolist()} must have one entry per SID level ({trie.num_levels})")
        return cls(
            codes=tuple(jnp.asarray(c) for c in trie.codes),
            next_node=tuple(jnp.asarray(n) for n in trie.next_node),
            level_offsets=jnp.asarray(offsets),
            level_sizes=tuple(int(s) for s in trie.level_sizes),
        )

    @property
    def num_levels(self) -> int:
        return len(self.codes)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamResult:
    """Per prompt, beams best first: `leaves` index `SidTrie.leaf_sids` / `leaf_items`."""

    codes: jax.Array  # int32 [B, R, L] SID codes (-1 where not valid)
    leaves: jax.Array  # int32 [B, R] leaf (distinct-SID row) ids, -1 where not valid
    scores: jax.Array  # float32 [B, R] sum of the L token log-probs, -inf where not valid
    valid: jax.Array  # bool [B, R] the beam holds a real SID (False only when the trie has < R SIDs)


def _level_logprobs(model: CausalLM, hidden: jax.Array, tables: TrieTables, level: int, normalize: str) -> jax.Array:
    """log p(code | ...) [N, K_l] over level `level`'s token block, from hidden states [N, E]."""
    size = tables.level_sizes[level]
    start = tables.level_offsets[level]
    if normalize == "vocab":
        logp = jax.nn.log_softmax(model.logits(hidden), axis=-1)
        return jax.lax.dynamic_slice_in_dim(logp, start, size, axis=-1)
    return jax.nn.log_softmax(model.vocab_block_logits(hidden, start, size), axis=-1)


def _mean_level_logprobs(models: tuple[CausalLM, ...], hiddens: list[jax.Array], tables: TrieTables, level: int,
                         normalize: str) -> jax.Array:
    """The members' mean log p(code | ...): a beam's score is then the mean of the members' SID scores."""
    total = sum(_level_logprobs(m, h, tables, level, normalize) for m, h in zip(models, hiddens))
    return total / len(models)


def _search(models: tuple[CausalLM, ...], tokens: jax.Array, attention_mask: jax.Array, tables: TrieTables,
            num_beams: int, normalize: str) -> BeamResult:
    b, t = tokens.shape
    positions = positions_from_mask(attention_mask)
    prefilled = [m.hidden_states(tokens, positions, attention_mask=attention_mask, cache=m.init_cache(b, t))
                 for m in models]
    return search_from(models, [h[:, -1] for h, _ in prefilled], [prefix for _, prefix in prefilled],
                       attention_mask.sum(axis=-1).astype(jnp.int32), tables, num_beams, normalize)


def search_from(models: tuple[CausalLM, ...], last_hidden: Sequence[jax.Array], prefixes: Sequence[KVCache],
                next_position: jax.Array, tables: TrieTables, num_beams: int, normalize: str) -> BeamResult:
    """The search after prompts already encoded (traced, inside a jit): per member, the last prompt token's
    hidden state [B, E] and the prompts' cache (its `mask` marks the real slots); `next_position` [B] is the
    position of the first SID token."""
    b = next_position.shape[0]
    r = num_beams
    num_levels = tables.num_levels

    # Level 0: every beam starts at the root; candidates are the root's children, padded to >= R.
    root_codes = tables.codes[0][0]
    root_next = tables.next_node[0][0]
    pad = max(r - root_codes.shape[0], 0)
    root_codes = jnp.pad(root_codes, (0, pad), constant_values=-1)
    root_next = jnp.pad(root_next, (0, pad), constant_values=-1)
    logp = _mean_level_logprobs(models, list(last_hidden), tables, 0, normalize)  # [B, K0]
    ok = root_codes >= 0
    cand = jnp.where(ok, logp[:, jnp.maximum(root_codes, 0)], -jnp.inf)  # [B, C0]
    scores, pick = jax.lax.top_k(cand, r)  # [B, R]
    valid = ok[pick]
    codes = root_codes[pick][..., None]  # [B, R, 1]
    node = root_next[pick]

    caches = [m.init_cache(b * r, max(num_levels - 1, 1)) for m in models]
    for level in range(1, num_levels):
        prev = tables.level_offsets[level - 1] + jnp.maximum(codes[..., -1], 0)
        step_tokens = prev.reshape(b * r, 1)
        step_positions = jnp.repeat(next_position + (level - 1), r)[:, None]
        stepped = [m.hidden_states(step_tokens, step_positions, cache=cache, prefix=prefix)
                   for m, cache, prefix in zip(models, caches, prefixes)]
        caches = [cache for _, cache in stepped]
        logp = _mean_level_logprobs(models, [h[:, 0] for h, _ in stepped], tables, level, normalize).reshape(b, r, -1)
        safe_node = jnp.maximum(node, 0)
        child_codes = tables.codes[level][safe_node]  # [B, R, B_l]
        child_next = tables.next_node[level][safe_node]
        ok = (child_codes >= 0) & valid[..., None]
        child_logp = jnp.take_along_axis(logp, jnp.maximum(child_codes, 0), axis=-1)
        cand = jnp.where(ok, scores[..., None] + child_logp, -jnp.inf)
        width = child_codes.shape[-1]
        scores, pick = jax.lax.top_k(cand.reshape(b, r * width), r)
        parent = pick // width
        valid = jnp.take_along_axis(ok.reshape(b, -1), pick, axis=1)
        new_code = jnp.take_along_axis(child_codes.reshape(b, -1), pick, axis=1)
        node = jnp.take_along_axis(child_next.reshape(b, -1), pick, axis=1)
        codes = jnp.concatenate([jnp.take_along_axis(codes, parent[..., None], axis=1), new_code[..., None]], axis=-1)
        if level < num_levels - 1:
            rows = (jnp.arange(b)[:, None] * r + parent).reshape(-1)
            caches = [cache.take_rows(rows) for cache in caches]

    scores = jnp.where(valid, scores, -jnp.inf)
    return BeamResult(codes=jnp.where(valid[..., None], codes, -1), leaves=jnp.where(valid, node, -1),
                      scores=scores, valid=valid)


@functools.partial(jax.jit, static_argnames=("graphdef", "num_beams", "normalize"))
def _search_jit(graphdef, state, tokens, attention_mask, tables, *, num_beams, normalize):
    return _search(nnx.merge(graphdef, state), tokens, attention_mask, tables, num_beams, normalize)


def beam_search(model: CausalLM | Sequence[CausalLM], tokens: jax.Array, attention_mask: jax.Array,
                tables: TrieTables, *, num_beams: int, normalize: str = "vocab") -> BeamResult:
    """Top-`num_beams` distinct real SIDs after each left-padded prompt (tokens/mask [B, T]), best first.

    normalize: "vocab" scores tokens by the log-softmax over the whole vocabulary (the
    papers' scores; transformers' `generate` ranks the same), "level" by the log-softmax
    over the level's code block only (no vocabulary-wide logits).
    `model` may be an ensemble (several models over the same tokens): each SID then scores the
    mean of the members' log-probabilities, one search over all of them.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got '{normalize}'")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if tokens.shape != attention_mask.shape or tokens.ndim != 2:
        raise ValueError(f"tokens {tokens.shape} and attention_mask {attention_mask.shape} must both be [B, T]")
    models = (model,) if isinstance(model, CausalLM) else tuple(model)
    if not models:
        raise ValueError("beam_search needs at least one model")
    vocab = {m.config.vocab_size for m in models}
    if len(vocab) != 1:
        raise ValueError(f"ensemble members must share one vocabulary, got vocab sizes {sorted(vocab)}")
    graphdef, state = nnx.split(models)
    return _search_jit(graphdef, state, tokens, attention_mask, tables, num_beams=num_beams, normalize=normalize)
