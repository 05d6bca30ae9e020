"""GRPO over Semantic IDs: a few pure functions around a rollout, compiled into one step.

One step = rollout (G completions per prompt: sampled reasoning + SID, or the top-G
constrained beams) -> in-graph rewards -> group-relative advantages -> reference
and old log-probs (computed once per batch in the same program) -> one or more
clipped-ratio policy updates with a k3 KL penalty to the frozen reference model.
Every log-prob pass encodes each prompt once and shares it across its G completions.
Nothing leaves the device inside a step; the host only reads the metrics after it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sidjax.model.transformer import positions_from_mask
from sidjax.train.advantages import compute_advantages
from sidjax.train.losses import TokenScores, hidden_token_logprobs
from sidjax.decode.beam import TrieTables, beam_search
from sidjax.decode.citations import Citations
from sidjax.decode.sample import SamplingParams, generate_with_caches
from sidjax.decode.think import search_after_thoughts
from sidjax.train.rewards import REWARD_COMPONENTS, closed_thoughts, compute_rewards


@dataclasses.dataclass(frozen=True)
class GrpoSettings:
    """The static (hashable) part of `config.grpo` that shapes the compiled step (`settings_from` builds it)."""

    group_size: int
    updates_per_batch: int
    clip_eps_low: float
    clip_eps_high: float
    kl_beta: float
    aggregation: str
    advantage: str
    advantage_eps: float
    pass_k: int
    reward_weights: tuple[tuple[str, float], ...]
    prefix_credit: tuple[float, ...]
    real_item_bonus: float
    gream_credit: tuple[float, ...]
    think_end_id: int | None  # set in reasoning mode: the SID must follow `</think>`
    credit_copies: bool  # False: a SID copied from the history earns prefix / gream credit only as the target
    logits_chunk: int


class Rollout(NamedTuple):
    """B prompts and their G completions each: row b * G + g of the completions belongs to prompt b."""

    prompts: jax.Array  # int32[B, P], left-padded
    prompt_mask: jax.Array  # bool[B, P]
    completion: jax.Array  # int32[N, T], N = B * G, right-padded
    completion_mask: jax.Array  # bool[N, T]: the completion tokens to learn


def score(model: nnx.Module, rollout: Rollout, chunk_size: int, with_entropy: bool = False) -> TokenScores:
    """Per-token log-probs (and entropies) [N, T] of the completion tokens under `model`.

    Each prompt is encoded once, not once per completion: like beam search, the B prompts are
    prefilled into a KV cache that the N = B * G completion rows read as a shared `prefix`, and
    the prompt's last hidden state predicts the first token of each of its completions. Gradients
    flow through the prompt's keys and values, so this is the full-sequence score, only cheaper.
    """
    prompts, prompt_mask = rollout.prompts, rollout.prompt_mask.astype(bool)
    batch, prompt_len = prompts.shape
    group = rollout.completion.shape[0] // batch
    prompt_hidden, prefix = model.hidden_states(
        prompts, positions_from_mask(prompt_mask), attention_mask=prompt_mask,
        cache=model.init_cache(batch, prompt_len),
    )
    next_position = jnp.repeat(prompt_mask.sum(axis=1).astype(jnp.int32), group)  # [N]
    positions = next_position[:, None] + jnp.arange(rollout.completion.shape[1])[None, :]
    hidden, _ = model.hidden_states(
        rollout.completion, positions, attention_mask=rollout.completion_mask.astype(bool), prefix=prefix
    )
    # Hidden state t predicts completion token t: the prompt's last state, then the completion's own.
    first = jnp.repeat(prompt_hidden[:, -1:], group, axis=0)
    hidden = jnp.concatenate([first, hidden[:, :-1]], axis=1)
    return hidden_token_logprobs(
        hidden, rollout.completion, model.logits, chunk_size=chunk_size, with_entropy=with_entropy
    )


def aggregate(values: jax.Array, mask: jax.Array, how: str) -> jax.Array:
    """Mean of per-token values over masked tokens: over all tokens (long completions weigh more), or per
    sequence then over sequences (each completion weighs the same)."""
    mask = mask.astype(jnp.float32)
    if how == "token_mean":
        return jnp.sum(values * mask) / jnp.maximum(mask.sum(), 1.0)
    if how == "sequence_mean":
        lengths = mask.sum(axis=1)
        per_sequence = jnp.sum(values * mask, axis=1) / jnp.maximum(lengths, 1.0)
        return per_sequence.sum() / jnp.maximum((lengths > 0).sum(), 1.0)  # empty rows (invalid beams) skipped
    raise ValueError(f"unknown aggregation '{how}' (known: token_mean, sequence_mean)")


def k3_kl(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """Per-token unbiased, non-negative KL(pi || ref) estimate: exp(d) - d - 1 with d = ref - pi."""
    delta = ref_logprobs - logprobs
    return jnp.exp(delta) - delta - 1.0


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    ref_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_eps_low: float,
    clip_eps_high: float,
    kl_beta: float,
    aggregation: str,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped importance-ratio objective plus beta * k3 KL, aggregated over completion tokens.

    logprobs/old/ref: f32[N, T]; advantages: f32[N] (one per completion, broadcast over its tokens).
    """
    ratio = jnp.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * adv
    per_token = -jnp.minimum(unclipped, clipped)
    kl = k3_kl(logprobs, ref_logprobs)
    if kl_beta:
        per_token = per_token + kl_beta * kl
    is_clipped = ((ratio < 1.0 - clip_eps_low) & (adv < 0)) | ((ratio > 1.0 + clip_eps_high) & (adv > 0))
    metrics = {
        "kl": aggregate(kl, mask, "token_mean"),
        "clip_fraction": aggregate(is_clipped.astype(jnp.float32), mask, "token_mean"),
    }
    return aggregate(per_token, mask, aggregation), metrics


class StepInputs(NamedTuple):
    """One batch of prompts and what their rewards are checked against."""

    prompts: jax.Array  # int32[B, P], left-padded
    prompt_mask: jax.Array  # bool[B, P]
    target_codes: jax.Array  # int32[B, L], the target item's SID
    rng: jax.Array  # key for the rollout
    cite_sids: jax.Array | None = None  # int32[B, H, L]: the SID tokens each prompt's thought may cite (-1 pads)


class Completions(NamedTuple):
    """A rollout's G completions of each of B prompts: row b * G + g belongs to prompt b."""

    tokens: jax.Array  # int32[N, T], N = B * G, right-padded
    mask: jax.Array  # bool[N, T]: the completion tokens to learn
    # int32[N, R, L]: the eval's top-R SIDs searched after each row's thought (-1: no SID), for the `search`
    # reward; None when the rollout does not search (`sample_rollout` without a `ThoughtSearch`)
    searched: jax.Array | None = None


# (model, inputs, trie tables) -> the completions
RolloutFn = Callable[[nnx.Module, StepInputs, TrieTables], Completions]


@dataclasses.dataclass(frozen=True)
class ThoughtSearch:
    """The reasoning-mode eval's SID search, run after each sampled thought of a rollout (`search_after_thoughts`):
    the `search` reward credits the thought by where the target ranks there, as the eval would rank it."""

    close_id: int  # `</think>`
    answer_prefix: tuple[int, ...]  # the tokens between `</think>` and the SID, as the eval feeds them
    num_beams: int
    normalize: str


@functools.lru_cache(maxsize=None)
def beam_rollout(group_size: int) -> RolloutFn:
    """MiniOneRec's rollout: the top-G constrained beams, best first, as SID token rows.

    One function per group size, so that `make_grpo_step` hands a second lineage the compiled step.
    """

    def rollout(model, inputs, tables):
        result = beam_search(model, inputs.prompts, inputs.prompt_mask, tables, num_beams=group_size)
        tokens = tables.level_offsets + jnp.maximum(result.codes, 0)  # [B, G, L]
        mask = jnp.broadcast_to(result.valid[..., None], tokens.shape)
        return Completions(tokens.reshape(-1, tokens.shape[-1]).astype(jnp.int32), mask.reshape(-1, tokens.shape[-1]))

    return rollout


def sample_rollout(params: SamplingParams, pad_id: int, token_level: jax.Array | None = None,
                   search: ThoughtSearch | None = None) -> RolloutFn:
    """G = params.num_samples sampled completions per prompt (reasoning text, then the SID).

    With `token_level` (`sidjax.decode.citations`: each token's SID level) the thought cites only the
    SIDs of `inputs.cite_sids`; `params.thought_end` frees the answer after `</think>`. The log-probs the
    update reads are the model's own, unmasked: the constraints shape what is tried, as the beam
    rollout's trie does. With `search`, each thought is also followed by the eval's SID search, from the
    rollout's own caches (`Completions.searched`).
    """

    def rollout(model, inputs, tables):
        if (token_level is None) != (inputs.cite_sids is None):
            raise ValueError("sample_rollout: citations need both the rollout's token_level and the batch's "
                             "cite_sids (StepInputs); one of them is missing")
        cites = None if token_level is None else Citations(inputs.cite_sids, token_level)
        out, prompt_cache, cache = generate_with_caches(model, inputs.prompts, inputs.prompt_mask, inputs.rng,
                                                        params, pad_id, cites)
        tokens = out.tokens.reshape(-1, params.max_new_tokens)
        mask = jnp.arange(params.max_new_tokens)[None, :] < out.lengths.reshape(-1, 1)
        if search is None:
            return Completions(tokens, mask)
        result = search_after_thoughts(model, inputs.prompt_mask, prompt_cache, out, cache, tables, search.close_id,
                                       pad_id, search.answer_prefix, search.num_beams, search.normalize)
        return Completions(tokens, mask, result.codes)

    return rollout


def _update(graphdef, wrt, arrays, rollout, old_lp, ref_lp, advantages, settings: GrpoSettings):
    """One optimizer step on the policy loss; returns the new arrays and the loss metrics."""
    model, optimizer = nnx.merge(graphdef, arrays)

    def loss_fn(model):
        scores = score(model, rollout, settings.logits_chunk, with_entropy=True)
        old = jax.lax.stop_gradient(scores.logprobs) if old_lp is None else old_lp
        loss, metrics = policy_loss(
            scores.logprobs, old, ref_lp, advantages, rollout.completion_mask,
            clip_eps_low=settings.clip_eps_low, clip_eps_high=settings.clip_eps_high,
            kl_beta=settings.kl_beta, aggregation=settings.aggregation,
        )
        metrics["entropy"] = aggregate(jax.lax.stop_gradient(scores.entropy), rollout.completion_mask, "token_mean")
        return loss, metrics

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
    optimizer.update(model, grads)
    metrics["loss"] = loss
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
    return nnx.state((model, optimizer)), metrics


def train_on_rollout(
    graphdef: nnx.GraphDef,
    wrt,
    arrays: nnx.State,
    ref_model: nnx.Module,
    rollout: Rollout,
    rewards: jax.Array,
    success: jax.Array,
    settings: GrpoSettings,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """Advantages, reference (and, for several updates, old) log-probs, then the policy updates."""
    advantages = compute_advantages(
        rewards, success, estimator=settings.advantage, group_size=settings.group_size,
        eps=settings.advantage_eps, pass_k=settings.pass_k,
    )
    ref_lp = jax.lax.stop_gradient(score(ref_model, rollout, settings.logits_chunk).logprobs)
    old_lp = None
    if settings.updates_per_batch > 1:
        policy = nnx.merge(graphdef, arrays)[0]
        old_lp = jax.lax.stop_gradient(score(policy, rollout, settings.logits_chunk).logprobs)
    metrics = {}
    for _ in range(settings.updates_per_batch):
        arrays, metrics = _update(graphdef, wrt, arrays, rollout, old_lp, ref_lp, advantages, settings)
    metrics["advantage_abs"] = jnp.abs(advantages).mean()
    return arrays, metrics


def rollout_metrics(rewards, rollout: Rollout, group_size: int, think_end_id: int | None) -> dict[str, jax.Array]:
    """Per-step means: reward by component, hit rate, well-formed rate, response length, the share of
    groups whose rewards differ (only those carry a learning signal: equal rewards give zero advantage)
    and, in reasoning mode, the share of completions that close their thought with `</think>`."""
    metrics = {f"reward/{name}": rewards.components[name].mean() for name in REWARD_COMPONENTS}
    metrics["reward/total"] = rewards.total.mean()
    metrics["hit_rate"] = rewards.hit.astype(jnp.float32).mean()
    metrics["well_formed"] = rewards.well_formed.astype(jnp.float32).mean()
    metrics["response_length"] = rollout.completion_mask.sum(axis=1).astype(jnp.float32).mean()
    groups = rewards.total.reshape(-1, group_size)
    metrics["informative_groups"] = (groups.max(axis=1) > groups.min(axis=1)).astype(jnp.float32).mean()
    if think_end_id is not None:
        closed = closed_thoughts(rollout.completion, rollout.completion_mask, think_end_id)
        metrics["think_closed"] = closed.astype(jnp.float32).mean()
    return metrics


@functools.lru_cache(maxsize=8)
def make_grpo_step(
    graphdef: nnx.GraphDef,
    wrt,
    rollout_fn: RolloutFn,
    settings: GrpoSettings,
) -> Callable[[nnx.State, nnx.State, StepInputs, TrieTables], tuple[nnx.State, dict[str, jax.Array]]]:
    """The whole GRPO step as one jitted function of arrays: (train arrays, ref params, inputs, trie tables).

    `rollout_fn` (see `RolloutFn`) is a jittable wrapper around the decoder: `beam_rollout`
    or `sample_rollout`; the `search` reward needs a rollout that searches (`Completions.searched`).
    The train arrays are donated; the reference parameters are only read. Memoised: equal arguments (another
    lineage's GRPO under the same settings) get the same jitted function, compiled once.
    """
    def step(arrays: nnx.State, ref_params: nnx.State, inputs: StepInputs, tables: TrieTables):
        model = nnx.merge(graphdef, arrays)[0]
        completions = rollout_fn(model, inputs, tables)
        rollout = Rollout(inputs.prompts, inputs.prompt_mask, completions.tokens, completions.mask)
        targets = jnp.repeat(inputs.target_codes, settings.group_size, axis=0)
        history = None
        if not settings.credit_copies:
            if inputs.cite_sids is None:
                raise ValueError("credit_copies=False reads each prompt's history SIDs: StepInputs.cite_sids is "
                                 "missing")
            history = jnp.repeat(inputs.cite_sids, settings.group_size, axis=0)
        rewards = compute_rewards(
            rollout.completion, rollout.completion_mask, targets, searched=completions.searched, history=history,
            tables=tables,
            think_end_id=settings.think_end_id, group_size=settings.group_size,
            weights=dict(settings.reward_weights), prefix_credit=settings.prefix_credit,
            real_item_bonus=settings.real_item_bonus, gream_credit=settings.gream_credit,
        )
        ref_model = nnx.merge(nnx.graphdef(model), ref_params)
        arrays, metrics = train_on_rollout(
            graphdef, wrt, arrays, ref_model, rollout, rewards.total, rewards.hit, settings
        )
        metrics.update(rollout_metrics(rewards, rollout, settings.group_size, settings.think_end_id))
        return arrays, metrics

    return jax.jit(step, donate_argnums=0)
