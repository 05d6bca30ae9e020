"""Per-token log-probabilities and masked cross-entropy without full-vocabulary logits.

With a real LLM vocabulary (~152k) the logits of a whole batch, `[B, T, V]` in
fp32, dwarf every activation of the model. These functions take the final
hidden states and project them to logits one chunk of positions at a time
under `jax.checkpoint`, so neither the forward nor the backward pass ever
holds more than `[B, chunk, V]` logits. SFT, GRPO and S-DPO all score
sequences through `token_logprobs`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jax.Array], jax.Array]


class TokenScores(NamedTuple):
    """`logprobs[b, t]` = log p(targets[b, t] | prefix); `entropy[b, t]` of the full distribution;
    `extra[b, t, k]` = log p(extra_ids[b, t, k] | prefix) (soft targets)."""

    logprobs: jax.Array
    entropy: jax.Array | None
    extra: jax.Array | None = None


def _score_chunk(logits_fn: LogitsFn, hidden: jax.Array, targets: jax.Array, with_entropy: bool,
                 extra_ids: jax.Array | None = None) -> TokenScores:
    logits = logits_fn(hidden).astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    extra = None if extra_ids is None else jnp.take_along_axis(logits, extra_ids, axis=-1) - lse[..., None]
    if not with_entropy:
        return TokenScores(picked - lse, None, extra)
    probs = jnp.exp(logits - lse[..., None])
    return TokenScores(picked - lse, lse - jnp.sum(probs * logits, axis=-1), extra)


def hidden_token_logprobs(
    hidden: jax.Array,
    targets: jax.Array,
    logits_fn: LogitsFn,
    *,
    chunk_size: int = 0,
    with_entropy: bool = False,
    extra_ids: jax.Array | None = None,
) -> TokenScores:
    """Score `targets` [B, T] (and `extra_ids` [B, T, K]) from final hidden states [B, T, D] and an output head.

    `chunk_size` positions are projected at a time (0 or >= T: all at once).
    Chunks run over the sequence axis so a batch sharded over devices stays
    sharded; each chunk is rematerialised in the backward pass.
    """
    batch, length = targets.shape
    if chunk_size <= 0 or chunk_size >= length:
        return _score_chunk(logits_fn, hidden, targets, with_entropy, extra_ids)
    chunks = -(-length // chunk_size)
    pad = chunks * chunk_size - length

    def to_chunks(x):  # [B, C*S, ...] -> [C, B, S, ...]: scan over chunks, batch axis untouched.
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(batch, chunks, chunk_size, *x.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint
    def body(carry, xs):
        return carry, _score_chunk(logits_fn, *xs[:2], with_entropy, xs[2])

    _, scores = jax.lax.scan(body, None, (to_chunks(hidden), to_chunks(targets),
                                          None if extra_ids is None else to_chunks(extra_ids)))

    def unchunk(x):
        return None if x is None else x.swapaxes(0, 1).reshape(batch, chunks * chunk_size, *x.shape[3:])[:, :length]

    return TokenScores(*(unchunk(x) for x in scores))


def token_logprobs(
    model,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array | None = None,
    *,
    chunk_size: int = 0,
    with_entropy: bool = False,
    dropout_key: jax.Array | None = None,
    extra_ids: jax.Array | None = None,
) -> TokenScores:
    """Log-probability of each next token under a `CausalLM`: shape [B, T-1].

    Entry t scores `tokens[:, t+1]` given `tokens[:, :t+1]`; align masks with
    `next_token_mask`. Uses `model.hidden_states` + `model.logits` so only
    `chunk_size` positions of logits exist at once. `dropout_key` (training
    only) applies the model's dropout. `extra_ids` [B, T, K], aligned with
    `tokens`, are scored too (`TokenScores.extra`, [B, T-1, K]).
    """
    hidden, _ = model.hidden_states(tokens, positions, attention_mask=attention_mask, dropout_key=dropout_key)
    return hidden_token_logprobs(
        hidden[:, :-1], tokens[:, 1:], model.logits, chunk_size=chunk_size, with_entropy=with_entropy,
        extra_ids=None if extra_ids is None else extra_ids[:, 1:],
    )


def response_window(
    hidden: jax.Array, tokens: jax.Array, mask: jax.Array, size: int, *per_token: jax.Array
) -> tuple[jax.Array, ...]:
    """The `size` positions that predict each row's learned tokens: (hidden [B,S,D], targets [B,S], mask [B,S],
    then each of `per_token` [B, T, ...] (aligned with `tokens`) at the targets: [B, S, ...]).

    `mask` [B, T] marks the learned tokens and must be ONE contiguous run per row
    no longer than `size` (a response after its prompt). Scoring only this window
    skips the output layer on prompt tokens: most of the logits FLOPs in SFT of
    short answers (SIDs) after long prompts.
    """
    length = tokens.shape[1]
    size = min(size, length - 1)
    first = jnp.argmax(mask, axis=1)  # the first learned token of each row
    positions = first[:, None] - 1 + jnp.arange(size)[None, :]  # hidden position t predicts token t + 1
    inside = (positions >= 0) & (positions <= length - 2)
    positions = jnp.clip(positions, 0, length - 2)
    window_hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
    targets = jnp.take_along_axis(tokens, positions + 1, axis=1)
    window_mask = jnp.take_along_axis(mask, positions + 1, axis=1) & inside
    gathered = (jnp.take_along_axis(x, (positions + 1).reshape(*positions.shape, *[1] * (x.ndim - 2)), axis=1)
                for x in per_token)
    return window_hidden, targets, window_mask, *gathered


def next_token_mask(loss_mask: jax.Array) -> jax.Array:
    """A per-token mask [B, T] (True on tokens to learn) aligned with `token_logprobs` [B, T-1]."""
    return loss_mask[:, 1:]


def masked_nll(logprobs: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of -logprob over masked tokens, number of masked tokens), both f32 scalars.

    Returned as a sum and a count so gradient accumulation and multi-device
    reductions divide once by the true token total.
    """
    mask = mask.astype(jnp.float32)
    return -jnp.sum(logprobs * mask), jnp.sum(mask)


def masked_soft_nll(logprobs: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum over masked tokens of the cross-entropy against soft targets: -sum_k weights[..., k] * logprobs[..., k]."""
    return -jnp.sum(jnp.sum(weights * logprobs, axis=-1) * mask.astype(jnp.float32))


def masked_cross_entropy(logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood over masked tokens (0 when the mask is empty)."""
    total, count = masked_nll(logprobs, mask)
    return total / jnp.maximum(count, 1.0)
