"""Reasoning mode in one jitted call: a thought, then the constrained SID search from the thought's cache.

The search continues `prompt <think> thought </think> answer-prefix`. Re-encoding that text (the
prompt and a thought of up to a few hundred tokens) cost a third of a reasoning-mode eval batch with
SmolLM2; here the search reads the keys and values the thought's decoding already cached, and only
the tokens after the thought (`</think>` and the answer prefix; a thought cut at the budget also
its last token) go through the model. Numerically the same text as re-encoding it, up to the order
of floating-point sums.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sidjax.decode import citations
from sidjax.decode.beam import BeamResult, TrieTables, search_from
from sidjax.decode.sample import Generation, SamplingParams, generate_with_caches
from sidjax.model.transformer import CausalLM, KVCache


def search_after_thoughts(model: CausalLM, attention_mask: jax.Array, prompt_cache: KVCache, thoughts: Generation,
                          thought_cache: KVCache, tables: TrieTables, close_id: int, pad_id: int,
                          answer_prefix: tuple[int, ...], num_beams: int, normalize: str) -> BeamResult:
    """The top-`num_beams` SIDs after each row's `thought </think> answer_prefix`, from `generate_with_caches`'
    caches (traced, inside a caller's jit); rows [N * n], `thoughts.num_samples` = n per prompt.

    A row's thought ends before its first `close_id`; a row without one (cut at the budget) is its whole text.
    Tokens the row wrote after `</think>` (a rollout's sampled answer) are not read.
    """
    tokens, lengths = thoughts.tokens.reshape(-1, thoughts.tokens.shape[-1]), thoughts.lengths.reshape(-1)
    rows, steps = tokens.shape
    samples = rows // attention_mask.shape[0]
    written = jnp.arange(steps)[None, :] < lengths[:, None]
    is_close = (tokens == close_id) & written
    closed = is_close.any(axis=1)
    last = jnp.take_along_axis(tokens, (lengths - 1)[:, None], axis=1)[:, 0]
    # Thought tokens read from the cache: those before `</think>`, else all but the last (not fed back).
    fed = jnp.where(closed, jnp.argmax(is_close, axis=1), lengths - 1).astype(jnp.int32)
    # What follows the cached tokens: `</think>` and the answer prefix, after the last thought token if that
    # was no `</think>` (a thought cut at the budget); left-padded to one width.
    after = jnp.concatenate([jnp.where(closed, pad_id, last)[:, None], jnp.full((rows, 1), close_id, jnp.int32),
                             jnp.broadcast_to(jnp.asarray(answer_prefix, jnp.int32), (rows, len(answer_prefix)))],
                            axis=1)
    after_mask = jnp.ones(after.shape, bool).at[:, 0].set(~closed)
    prompt_len = jnp.repeat(attention_mask.sum(axis=-1).astype(jnp.int32), samples)
    first = prompt_len + fed  # position of the first token after the cache
    positions = first[:, None] + jnp.cumsum(after_mask, axis=1, dtype=jnp.int32) - 1
    if samples > 1:  # each sample reads its prompt's slots as its own
        prompt_cache = prompt_cache.repeat_rows(samples)
    cached = prompt_cache.joined(thought_cache, jnp.arange(steps)[None, :] < fed[:, None])
    hidden, after_cache = model.hidden_states(after, positions, attention_mask=after_mask,
                                              cache=model.init_cache(rows, after.shape[1]), prefix=cached)
    prefix = cached.joined(after_cache, after_mask)
    return search_from((model,), [hidden[:, -1]], [prefix], first + after_mask.sum(axis=1, dtype=jnp.int32),
                       tables, num_beams, normalize)


def _think_and_search(model: CausalLM, tokens: jax.Array, attention_mask: jax.Array, rng: jax.Array,
                      cites: citations.Citations | None, tables: TrieTables, params: SamplingParams, pad_id: int,
                      close_id: int, answer_prefix: tuple[int, ...], num_beams: int, normalize: str
                      ) -> tuple[Generation, BeamResult]:
    thought, prompt_cache, thought_cache = generate_with_caches(model, tokens, attention_mask, rng, params, pad_id,
                                                                cites)
    return thought, search_after_thoughts(model, attention_mask, prompt_cache, thought, thought_cache, tables,
                                          close_id, pad_id, answer_prefix, num_beams, normalize)


@functools.partial(jax.jit, static_argnames=("graphdef", "params", "pad_id", "close_id", "answer_prefix",
                                             "num_beams", "normalize"))
def _think_and_search_jit(graphdef, state, tokens, attention_mask, rng, cites, tables, *, params, pad_id, close_id,
                          answer_prefix, num_beams, normalize):
    return _think_and_search(nnx.merge(graphdef, state), tokens, attention_mask, rng, cites, tables, params, pad_id,
                             close_id, answer_prefix, num_beams, normalize)


def think_and_search(model: CausalLM, tokens: jax.Array, attention_mask: jax.Array, params: SamplingParams, *,
                     rng: jax.Array, pad_id: int, cites: citations.Citations | None, tables: TrieTables,
                     close_id: int, answer_prefix: tuple[int, ...], num_beams: int, normalize: str
                     ) -> tuple[Generation, BeamResult]:
    """One thought per left-padded prompt (`generate` with `params`, `stop_tokens` holding `close_id`), then the
    top-`num_beams` SIDs after `thought </think> answer_prefix` (`beam_search`'s result)."""
    if params.num_samples != 1:
        raise ValueError(f"think_and_search writes one thought per prompt, got num_samples={params.num_samples}")
    if close_id not in params.stop_tokens:
        raise ValueError(f"the thought must stop at its closing token {close_id}, got stop_tokens={params.stop_tokens}")
    graphdef, state = nnx.split(model)
    return _think_and_search_jit(graphdef, state, tokens, attention_mask, rng, cites, tables, params=params,
                                 pad_id=pad_id, close_id=close_id, answer_prefix=tuple(answer_prefix),
                                 num_beams=num_beams, normalize=normalize)
