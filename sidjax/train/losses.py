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
    """`logprobs[b, t]` = log p(targets[b, t] | prefix); `entropy[b, t]` of the full distribution."""

    logprobs: jax.Array
    entropy: jax.Array | None


def _score_chunk(logits_fn: LogitsFn, hidden: jax.Array, targets: jax.Array, with_entropy: bool):
    logits = logits_fn(hidden).astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    if not with_entropy:
        return picked - lse, None
    probs = jnp.exp(logits - lse[..., None])
    return picked - lse, lse - jnp.sum(probs * logits, axis=-1)


def hidden_token_logprobs(
    hidden: jax.Array,
    targets: jax.Array,
    logits_fn: LogitsFn,
    *,
    chunk_size: int = 0,
    with_entropy: bool = False,
) -> TokenScores:
    """Score `targets` [B, T] from final hidden states [B, T, D] and an output head.

    `chunk_size` positions are projected at a time (0 or >= T: all at once).
    Chunks run over the sequence axis so a batch sharded over devices stays
    sharded; each chunk is rematerialised in the backward pass.
    """
    batch, length = targets.shape
    if chunk_size <= 0 or chunk_size >= length:
        logprobs, entropy = _score_chunk(logits_fn, hidden, targets, with_entropy)
        return TokenScores(logprobs, entropy)
    chunks = -(-length // chunk_size)
    pad = chunks * chunk_size - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    # [B, C*S, ...] -> [C, B, S, ...]: scan over chunks, batch axis untouched.
    hidden = hidden.reshape(batch, chunks, chunk_size, -1).swapaxes(0, 1)
    targets = targets.reshape(batch, chunks, chunk_size).swapaxes(0, 1)

    @jax.checkpoint
    def body(carry, xs):
        logprobs, entropy = _score_chunk(logits_fn, xs[0], xs[1], with_entropy)
        return carry, (logprobs, entropy)

    _, (logprobs, entropy) = jax.lax.scan(body, None, (hidden, targets))

    def unchunk(x):
        return x.swapaxes(0, 1).reshape(batch, chunks * chunk_size)[:, :length]

    return TokenScores(unchunk(logprobs), None if entropy is None else unchunk(entropy))


def token_logprobs(
    model,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array | None = None,
    *,
    chunk_size: int = 0,
    with_entropy: bool = False,
    dropout_key: jax.Array | None = None,
) -> TokenScores:
    """Log-probability of each next token under a `CausalLM`: shape [B, T-1].

    Entry t scores `tokens[:, t+1]` given `tokens[:, :t+1]`; align masks with
    `next_token_mask`. Uses `model.hidden_states` + `model.logits` so only
    `chunk_size` positions of logits exist at once. `dropout_key` (training
    only) applies the model's dropout.
    """
    hidden, _ = model.hidden_states(tokens, positions, attention_mask=attention_mask, dropout_key=dropout_key)
    return hidden_token_logprobs(
        hidden[:, :-1], tokens[:, 1:], model.logits, chunk_size=chunk_size, with_entropy=with_entropy
    )


def response_window(
    hidden: jax.Array, tokens: jax.Array, mask: jax.Array, size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The `size` positions that predict each row's learned tokens: (hidden [B,S,D], targets [B,S], mask [B,S]).

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
    return window_hidden, targets, window_mask


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


def masked_cross_entropy(logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood over masked tokens (0 when the mask is empty)."""
    total, count = masked_nll(logprobs, mask)
    return total / jnp.maximum(count, 1.0)
