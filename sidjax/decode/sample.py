"""Jitted text generation: one prefill, then a fixed-shape decode loop (greedy / temperature / top-k / top-p).

The API the RL rollouts and reasoning-mode evaluation build on:

    tokens, mask = pad_prompts(prompt_ids, bucket=32, pad_id=tok.pad_id)
    params = SamplingParams(max_new_tokens=256, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                            no_repeat_ngram=0, stop_tokens=(eos_id,), suppress_tokens=(), thought_end=-1,
                            num_samples=8)
    out = generate(model, tokens, mask, params, rng=jax.random.key(0), pad_id=tok.pad_id)
    out.tokens [N, n, max_new_tokens], out.logprobs, out.lengths [N, n]

Every setting is an explicit argument: nothing is read from a model's files
(generation_config.json defaults silently changed results in the PyTorch originals).
Each prompt is prefilled once and its cache shared by its `num_samples` rows as
the model's read-only `prefix`; the rows only cache the tokens they generate.
The loop stops early once every row has produced a stop token.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.decode import citations
from sidjax.model.transformer import CausalLM, KVCache, positions_from_mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to sample; all fields are required so no default is ever inherited silently."""

    max_new_tokens: int  # fixed decode length (the loop may end earlier when every row stopped)
    temperature: float  # 0.0: greedy (argmax); else logits / temperature
    top_k: int  # 0: off; else keep the k most likely tokens
    top_p: float  # 1.0: off; else keep the smallest set of tokens with probability >= top_p
    # 1.0: off; else transformers' repetition penalty: the logit of every token already in the prompt or
    # the continuation is divided by it (if positive) or multiplied by it (if negative) before sampling.
    repetition_penalty: float
    # 0: off; else a token that would repeat an n-gram of this many tokens already in the row's continuation
    # is never picked (transformers' no_repeat_ngram_size, but over the generated tokens only: n-grams of
    # the prompt stay free, so a reasoning can still cite the history it was given).
    no_repeat_ngram: int
    stop_tokens: tuple[int, ...]  # a row ends after generating any of these (it is kept in the output)
    suppress_tokens: tuple[int, ...]  # never generated (transformers' suppress_tokens)
    # -1: off; else a reasoning turn's `</think>`: `suppress_tokens` and the citations hold only in the thought
    # before it, and the answer after it is free (a rollout that writes thought and answer in one pass).
    thought_end: int
    num_samples: int  # rows per prompt (an RL group); 1 for plain generation

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "temperature": self.temperature >= 0,
            "top_k": self.top_k >= 0,
            "top_p": 0 < self.top_p <= 1,
            "repetition_penalty": self.repetition_penalty > 0,
            "no_repeat_ngram": self.no_repeat_ngram >= 0,
            "num_samples": self.num_samples >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SamplingParams.{name} has an invalid value {getattr(self, name)!r}")
        for name in ("stop_tokens", "suppress_tokens"):
            object.__setattr__(self, name, tuple(int(t) for t in getattr(self, name)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Generation:
    """Generated continuations, `num_samples` rows per prompt."""

    tokens: jax.Array  # int32 [N, n, max_new_tokens]; pad_id after a row's end
    logprobs: jax.Array  # float32 [N, n, max_new_tokens]: log p(token) under the model itself
    #                      (temperature 1, no truncation: what RL ratios need); 0 after the end
    lengths: jax.Array  # int32 [N, n] generated tokens per row, the stop token included
    stopped: jax.Array  # bool [N, n] the row ended with a stop token (not by running out of budget)


def pad_prompts(prompts: Sequence[Sequence[int]], *, bucket: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists to one width, a multiple of `bucket` (few distinct shapes, few compiles).

    Returns tokens int32 [N, T] and attention_mask bool [N, T].
    """
    if not prompts:
        raise ValueError("pad_prompts: no prompts")
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise ValueError(f"pad_prompts: prompt {empty[0]} is empty")
    longest = max(len(p) for p in prompts)
    width = -(-longest // bucket) * bucket
    tokens = np.full((len(prompts), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(prompts), width), dtype=bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = np.asarray(p, dtype=np.int32)
        mask[i, width - len(p):] = True
    return tokens, mask


def sample_logits(logits: jax.Array, rng: jax.Array, params: SamplingParams) -> jax.Array:
    """One token per row from float32 logits [M, V] with the temperature / top-k / top-p of `params`."""
    if params.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / params.temperature
    if params.top_k:
        kth = jax.lax.top_k(logits, params.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if params.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # The smallest logit still kept: tokens whose preceding mass is below top_p stay.
        keep = mass_before < params.top_p
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return _inverse_cdf_sample(logits, rng)


def penalize_repeats(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """Logits [M, V] with those of `seen` tokens (bool [M, V]) pushed down by `penalty` (> 1 discourages)."""
    return jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)


def repeated_ngram_bans(generated: jax.Array, step: jax.Array, n: int, vocab: int) -> jax.Array:
    """bool [M, V]: the tokens that, generated at position `step`, would repeat an `n`-gram of `generated[:, :step]`.

    A window of the continuation that equals its last n - 1 tokens bans the token that followed it.
    """
    rows, width = generated.shape
    starts = jnp.arange(width)
    match = jnp.broadcast_to(starts < step - (n - 1), (rows, width))  # windows whose next token is generated
    last = jax.lax.dynamic_slice_in_dim(generated, jnp.maximum(step - (n - 1), 0), n - 1, axis=1)
    for k in range(n - 1):
        shifted = jnp.pad(generated[:, k:], ((0, 0), (0, k)), constant_values=-1)
        match &= shifted == last[:, k:k + 1]
    following = jnp.pad(generated[:, n - 1:], ((0, 0), (0, n - 1)), constant_values=vocab)
    banned = jnp.zeros((rows, vocab + 1), bool).at[jnp.arange(rows)[:, None], jnp.where(match, following, vocab)]
    return banned.set(True)[:, :vocab]


def _seen_tokens(tokens: jax.Array, attention_mask: jax.Array, vocab: int) -> jax.Array:
    """bool [N, V]: which tokens each left-padded prompt row contains (padding excluded)."""
    rows = jnp.arange(tokens.shape[0])[:, None]
    seen = jnp.zeros((tokens.shape[0], vocab + 1), bool).at[rows, jnp.where(attention_mask, tokens, vocab)].set(True)
    return seen[:, :vocab]


def _inverse_cdf_sample(logits: jax.Array, rng: jax.Array) -> jax.Array:
    """An exact categorical draw per row from one uniform number, by inverting the CDF in two levels.

    `jax.random.categorical` draws a Gumbel number per vocabulary entry: on a CPU that is most of a
    small model's decode step. Here each row spends one uniform number; the CDF is walked over blocks
    of about sqrt(V) tokens, then inside the chosen block, so no cumulative sum runs over all of V.
    Tokens of zero probability (filtered to -inf) are never drawn.
    """
    rows, vocab = logits.shape
    block = math.isqrt(vocab - 1) + 1  # ceil(sqrt(V))
    n_blocks = -(-vocab // block)
    probs = jnp.pad(jax.nn.softmax(logits, axis=-1), ((0, 0), (0, n_blocks * block - vocab)))
    blocks = probs.reshape(rows, n_blocks, block)
    block_cdf = jnp.cumsum(blocks.sum(axis=-1), axis=-1)  # [rows, n_blocks]
    u = (1.0 - jax.random.uniform(rng, (rows, 1))) * block_cdf[:, -1:]  # in (0, total]
    chosen = jnp.minimum(jnp.sum(block_cdf < u, axis=-1), n_blocks - 1)
    # Mass before the chosen block: the same numbers the choice compared, so the remainder is > 0.
    edges = jnp.pad(block_cdf, ((0, 0), (1, 0)))
    before = jnp.take_along_axis(edges, chosen[:, None], axis=-1)[:, 0]
    inner = jnp.take_along_axis(blocks, chosen[:, None, None], axis=1)[:, 0]  # [rows, block]
    inner_cdf = jnp.cumsum(inner, axis=-1)
    index = jnp.sum(inner_cdf < (u[:, 0] - before)[:, None], axis=-1)
    # Rounding may leave the remainder above the block's own sum: take its last token of nonzero probability.
    last_nonzero = block - 1 - jnp.argmax((inner > 0)[:, ::-1], axis=-1)
    return (chosen * block + jnp.minimum(index, last_nonzero)).astype(jnp.int32)


def generate_with_caches(model: CausalLM, tokens: jax.Array, attention_mask: jax.Array, rng: jax.Array,
                         params: SamplingParams, pad_id: int, cites: citations.Citations | None
                         ) -> tuple[Generation, KVCache, KVCache]:
    """`generate`'s work, traced inside a caller's jit; also returns the prompts' cache (`prefix`, [N, T] slots)
    and the rows' cache of generated tokens ([N * n, max_new_tokens] slots: slot j holds token j once it
    has been fed back, which every token before a row's last one has been)."""
    n_prompts, width = tokens.shape
    n, steps = params.num_samples, params.max_new_tokens
    rows = n_prompts * n
    hidden, prefix = model.hidden_states(tokens, positions_from_mask(attention_mask),
                                         attention_mask=attention_mask, cache=model.init_cache(n_prompts, width))
    first_logits = jnp.repeat(model.logits(hidden[:, -1]), n, axis=0)  # [rows, V]
    start = jnp.repeat(attention_mask.sum(axis=-1).astype(jnp.int32), n)  # position of generated token 0
    stop = jnp.asarray(params.stop_tokens or (-1,), jnp.int32)
    penalize = params.repetition_penalty != 1.0
    # Tokens seen so far per row (only tracked when penalized): a [rows, 1] dummy otherwise.
    seen = (jnp.repeat(_seen_tokens(tokens, attention_mask, first_logits.shape[-1]), n, axis=0) if penalize
            else jnp.zeros((rows, 1), bool))
    if cites is not None:
        cites = cites.repeat(n)
    cited = citations.start(cites) if cites is not None else ()  # the SID each row is writing

    def pick(logits, step, done, seen, cited, thinking, generated):
        shaped = penalize_repeats(logits, seen, params.repetition_penalty) if penalize else logits
        if params.no_repeat_ngram:
            bans = repeated_ngram_bans(generated, step, params.no_repeat_ngram, logits.shape[-1])
            if cites is not None:  # a citation's path is fixed once begun: no ban may cut it off
                bans &= (cited[0] == 0)[:, None]
            shaped = jnp.where(bans, -jnp.inf, shaped)
        if cites is not None:
            shaped = jnp.where(citations.allowed(cites, *cited) | ~thinking[:, None], shaped, -jnp.inf)
        if params.suppress_tokens:
            suppressed = jnp.asarray(params.suppress_tokens)
            shaped = shaped.at[:, suppressed].set(jnp.where(thinking[:, None], -jnp.inf, shaped[:, suppressed]))
        token = sample_logits(shaped, jax.random.fold_in(rng, step), params)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)[:, 0]
        if penalize:
            seen = seen.at[jnp.arange(rows), token].set(True)
        if cites is not None:
            cited = citations.advance(cites, *cited, token)
        thinking &= token != params.thought_end
        token = jnp.where(done, pad_id, token)
        logp = jnp.where(done, 0.0, logp)
        return token, logp, done | jnp.isin(token, stop), seen, cited, thinking

    out_tokens = jnp.full((rows, steps), pad_id, jnp.int32)
    thinking = jnp.ones((rows,), bool)  # before `thought_end` (always, when it is off)
    token, logp, done, seen, cited, thinking = pick(first_logits, 0, jnp.zeros((rows,), bool), seen, cited, thinking,
                                                    out_tokens)
    out_tokens = out_tokens.at[:, 0].set(token)
    out_logp = jnp.zeros((rows, steps), jnp.float32).at[:, 0].set(logp)
    lengths = jnp.ones((rows,), jnp.int32)
    cache = model.init_cache(rows, steps)

    def cond(carry):
        step, done = carry[0], carry[5]
        return (step < steps) & ~jnp.all(done)

    def body(carry):
        step, token, cache, out_tokens, out_logp, done, lengths, seen, cited, thinking = carry
        hidden, cache = model.hidden_states(token[:, None], (start + step - 1)[:, None], cache=cache, prefix=prefix)
        new_token, logp, new_done, seen, cited, thinking = pick(model.logits(hidden[:, 0]), step, done, seen, cited,
                                                                thinking, out_tokens)
        out_tokens = out_tokens.at[:, step].set(new_token)
        out_logp = out_logp.at[:, step].set(logp)
        lengths = lengths + (~done).astype(jnp.int32)
        return step + 1, new_token, cache, out_tokens, out_logp, new_done, lengths, seen, cited, thinking

    carry = (jnp.ones((), jnp.int32), token, cache, out_tokens, out_logp, done, lengths, seen, cited, thinking)
    _, _, cache, out_tokens, out_logp, done, lengths, _, _, _ = jax.lax.while_loop(cond, body, carry)
    shape = (n_prompts, n)
    return Generation(tokens=out_tokens.reshape(*shape, steps), logprobs=out_logp.reshape(*shape, steps),
                      lengths=lengths.reshape(shape), stopped=done.reshape(shape)), prefix, cache


@functools.partial(jax.jit, static_argnames=("graphdef", "params", "pad_id"))
def _generate_jit(graphdef, state, tokens, attention_mask, rng, cites, *, params, pad_id):
    return generate_with_caches(nnx.merge(graphdef, state), tokens, attention_mask, rng, params, pad_id, cites)[0]


def generate(model: CausalLM, tokens: jax.Array, attention_mask: jax.Array, params: SamplingParams, *,
             rng: jax.Array, pad_id: int, cites: citations.Citations | None = None) -> Generation:
    """Continue each left-padded prompt (tokens/attention_mask [N, T], e.g. from `pad_prompts`).

    Deterministic for a given `rng`; greedy (`temperature=0`) ignores it. `cites`: the SIDs each
    prompt's continuation may write (`sidjax.decode.citations`); None: any.
    """
    if tokens.shape != attention_mask.shape or tokens.ndim != 2:
        raise ValueError(f"tokens {tokens.shape} and attention_mask {attention_mask.shape} must both be [N, T]")
    if cites is not None and cites.sids.shape[0] != tokens.shape[0]:
        raise ValueError(f"cites has {cites.sids.shape[0]} rows for {tokens.shape[0]} prompts")
    graphdef, state = nnx.split(model)
    return _generate_jit(graphdef, state, tokens, attention_mask, rng, cites, params=params, pad_id=pad_id)
