"""S-DPO: softmax DPO of the target SID against M negative SIDs per prompt.

loss = -log sigmoid(-log sum_j exp(beta * (r_j - r_chosen))), with r = log pi - log pi_ref
summed over the response tokens. With M = 1 it is DPO's -log sigmoid(beta * (r_c - r_j)).
The reference model's log-probs are computed inside the same jitted step.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.train.grpo import Rollout, score


@dataclasses.dataclass(frozen=True)
class SdpoSettings:
    negatives: int
    beta: float
    logits_chunk: int


def sdpo_loss(chosen: jax.Array, rejected: jax.Array, beta: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean S-DPO loss over prompts; chosen f32[B], rejected f32[B, M] are policy/reference log-ratios."""
    margins = beta * (rejected - chosen[:, None])
    loss = jax.nn.softplus(jax.nn.logsumexp(margins, axis=1))  # -log sigmoid(-x) = softplus(x)
    metrics = {
        "accuracy": (chosen[:, None] > rejected).all(axis=1).astype(jnp.float32).mean(),
        "chosen_reward": beta * chosen.mean(),
        "rejected_reward": beta * rejected.mean(),
    }
    return loss.mean(), metrics


def sequence_logratio(model: nnx.Module, ref_model: nnx.Module, rollout: Rollout, chunk_size: int) -> jax.Array:
    """f32[N]: sum over response tokens of log pi - log pi_ref (each prompt encoded once for its 1 + M responses)."""
    logprobs = score(model, rollout, chunk_size).logprobs
    ref = jax.lax.stop_gradient(score(ref_model, rollout, chunk_size).logprobs)
    return jnp.sum((logprobs - ref) * rollout.completion_mask, axis=1)


class PreferenceBatch(NamedTuple):
    prompts: jax.Array  # int32[B, P], left-padded
    prompt_mask: jax.Array  # bool[B, P]
    responses: jax.Array  # int32[B, 1 + M, T]: the chosen response first, then M rejected ones
    response_mask: jax.Array  # bool[B, 1 + M, T]


def make_sdpo_step(
    graphdef: nnx.GraphDef, wrt, settings: SdpoSettings
) -> Callable[[nnx.State, nnx.State, PreferenceBatch], tuple[nnx.State, dict[str, jax.Array]]]:
    """One jitted S-DPO update: (train arrays [donated], reference params, batch) -> (arrays, metrics)."""

    def step(arrays: nnx.State, ref_params: nnx.State, batch: PreferenceBatch):
        model, optimizer = nnx.merge(graphdef, arrays)
        ref_model = nnx.merge(nnx.graphdef(model), ref_params)
        b, group, t = batch.responses.shape
        rollout = Rollout(
            batch.prompts, batch.prompt_mask, batch.responses.reshape(b * group, t),
            batch.response_mask.reshape(b * group, t),
        )

        def loss_fn(model):
            ratio = sequence_logratio(model, ref_model, rollout, settings.logits_chunk).reshape(b, group)
            return sdpo_loss(ratio[:, 0], ratio[:, 1:], settings.beta)

        (loss, metrics), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
        optimizer.update(model, grads)
        metrics["loss"] = loss
        return nnx.state((model, optimizer)), metrics

    return jax.jit(step, donate_argnums=0)


def random_negatives(targets: np.ndarray, num_items: int, negatives: int, rng: np.random.Generator) -> np.ndarray:
    """int[B, M] item ids drawn uniformly from the catalogue minus each row's target (without replacement)."""
    if num_items <= negatives:
        raise ValueError(f"need more than {negatives} items to draw {negatives} negatives, have {num_items}")
    draws = np.stack([rng.choice(num_items - 1, size=negatives, replace=False) for _ in targets])
    return draws + (draws >= targets[:, None])  # skip over the target id


def hard_negatives(beam_items: np.ndarray, targets: np.ndarray, negatives: int) -> np.ndarray:
    """int[B, M]: the best-ranked beams that are not the target (beam_items: int[B, R], R > M)."""
    if beam_items.shape[1] <= negatives:
        raise ValueError(f"need more than {negatives} beams to pick {negatives} hard negatives")
    keep = beam_items != targets[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")  # non-target beams first, rank order preserved
    return np.take_along_axis(beam_items, order, axis=1)[:, :negatives]
