"""Supervised fine-tuning: the jitted train/eval steps, and `fit`: SFT on the one training loop (train/loop.py).

A batch is a dict of numpy arrays [B, T]: `tokens` (int32), `attention_mask`
(bool, real tokens), `loss_mask` (bool, the tokens to learn: the response), and
the loader's `example_mask` (bool [B], padding rows of a short last batch).
Rows may be left- or right-padded: positions count real tokens from 0.

The step sums the loss over tokens and divides once by the batch's token
count, so `grad_accum_steps` micro-batches give the same update as one big
batch, and every device agrees on the normalisation.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding

from sidjax.data.loader import EXAMPLE_MASK
from sidjax.model.transformer import positions_from_mask
from sidjax.parallel.placement import place_state, put_batch, replicated
from sidjax.train import losses
from sidjax.train.checkpoint import BestModel, TrainCheckpoints
from sidjax.train.loop import LoopHook, train_loop
from sidjax.train.state import TrainState, learning_rate_schedule
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.progress import progress

Batch = Mapping[str, Any]
BATCH_KEYS = ("tokens", "attention_mask", "loss_mask", EXAMPLE_MASK)
SOFT_IDS, SOFT_WEIGHTS = "soft_ids", "soft_weights"  # distillation's soft targets (`sidjax.baselines.soft_targets`)


def loss_sums(
    model: nnx.Module, batch: Batch, logits_chunk: int = 0, response_window: int = 0,
    dropout_key: Optional[jax.Array] = None, distill_weight: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """(summed next-token NLL over the response tokens, their number) of one batch.

    `response_window` > 0 computes logits only on that many positions around each
    row's (contiguous) response instead of on every position. `dropout_key` (train
    step only) applies the model's dropout. With `distill_weight` > 0 the batch's soft
    targets (`soft_ids`, `soft_weights` [B, T, K]) weigh in: each token's loss is
    (1 - w) x its NLL + w x its cross-entropy against them.
    """
    attention = batch["attention_mask"]
    tokens = batch["tokens"]
    learn = batch["loss_mask"] & attention & batch[EXAMPLE_MASK][:, None]
    soft = (batch[SOFT_IDS], batch[SOFT_WEIGHTS]) if distill_weight > 0 else ()
    if response_window <= 0:
        scores = losses.token_logprobs(model, tokens, positions_from_mask(attention), attention,
                                       chunk_size=logits_chunk, dropout_key=dropout_key,
                                       extra_ids=soft[0] if soft else None)
        mask, weights = losses.next_token_mask(learn), soft[1][:, 1:] if soft else None
    else:
        hidden, _ = model.hidden_states(tokens, positions_from_mask(attention), attention_mask=attention,
                                        dropout_key=dropout_key)
        hidden, targets, mask, *soft = losses.response_window(hidden, tokens, learn, response_window, *soft)
        scores = losses.hidden_token_logprobs(hidden, targets, model.logits, chunk_size=logits_chunk,
                                              extra_ids=soft[0] if soft else None)
        weights = soft[1] if soft else None
    total, count = losses.masked_nll(scores.logprobs, mask)
    if weights is None:
        return total, count
    return (1.0 - distill_weight) * total + distill_weight * losses.masked_soft_nll(scores.extra, weights, mask), count


def _micro_batches(batch: Batch, accum: int) -> Batch:
    """[B, ...] -> [accum, B/accum, ...], micro-batch k = rows k, k+accum, ...: the batch axis keeps its sharding."""

    def split(x):
        return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


# Folded into the seed's key first, so dropout masks never reuse the keys nnx.Rngs(seed) initialised weights with.
_DROPOUT_STREAM = 0x64726F70  # "drop"


def dropout_key(seed: int | jax.Array, step: jax.Array) -> jax.Array:
    """The dropout key of optimizer step `step`.

    A function of (seed, step) only, so a resumed run redraws exactly the masks an uninterrupted one would.
    """
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _DROPOUT_STREAM), step)


def _train_step(graphdef: nnx.GraphDef, wrt: Any, accum: int, logits_chunk: int, window: int, distill_weight: float,
                seed: jax.Array, arrays: nnx.State, batch: Batch):
    model, optimizer = nnx.merge(graphdef, arrays)
    model_def, params, rest = nnx.split(model, wrt, ...)
    key = None
    if model.config.dropout > 0.0:  # at 0 the step holds no random-number ops at all
        key = dropout_key(seed, optimizer.step[...])

    def loss(p, micro, micro_key):
        return loss_sums(nnx.merge(model_def, p, rest), micro, logits_chunk, window, micro_key, distill_weight)

    grad_fn = jax.value_and_grad(loss, has_aux=True)
    if accum == 1:
        (total, count), grads = grad_fn(params, batch, key)
    else:

        def accumulate(carry, xs):
            micro, index = xs
            (t, n), g = grad_fn(params, micro, None if key is None else jax.random.fold_in(key, index))
            return jax.tree.map(jnp.add, carry, (t, n, g)), None

        zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
        micro_batches = (_micro_batches(batch, accum), jnp.arange(accum))
        (total, count, grads), _ = jax.lax.scan(accumulate, zeros, micro_batches)
    denominator = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denominator).astype(p.dtype), grads, params)
    optimizer.update(model, grads)
    metrics = {
        "loss": total / denominator,
        "target_tokens": count,
        "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
        "grad_norm": optax.tree.norm(grads),
    }
    return nnx.state((model, optimizer)), metrics


def _eval_step(graphdef: nnx.GraphDef, logits_chunk: int, window: int, model_arrays: nnx.State, batch: Batch):
    return loss_sums(nnx.merge(graphdef, model_arrays), batch, logits_chunk, window)


# Module-level jits with the graph definition static: a second fit of the same model (a resumed run,
# reason_sft after sft, another lineage's seed: the seed is an argument) reuses the compiled step.
_jit_train_step = jax.jit(_train_step, static_argnums=(0, 1, 2, 3, 4, 5), donate_argnums=7)
_jit_eval_step = jax.jit(_eval_step, static_argnums=(0, 1, 2))


def make_train_step(
    state: TrainState, *, grad_accum_steps: int = 1, logits_chunk: int = 0, response_window: int = 0,
    seed: int = 0, distill_weight: float = 0.0,
) -> Callable[[nnx.State, Batch], tuple[nnx.State, dict]]:
    """`step(arrays, batch) -> (arrays, metrics)`, jitted, donating `arrays` and keeping their shardings.

    With `model.config.dropout` > 0 each step draws its masks from `dropout_key(seed, optimizer step)`;
    `distill_weight`: see `loss_sums` (the batches then carry soft targets).
    """
    static = (state.graphdef, state.wrt, grad_accum_steps, logits_chunk, response_window, distill_weight)
    seed = jnp.asarray(seed, jnp.int32)
    shardings = jax.tree.map(lambda x: x.sharding, state.arrays)
    mesh = next((s.mesh for s in jax.tree.leaves(shardings) if isinstance(s, NamedSharding)), None)
    if mesh is None:
        return functools.partial(_jit_train_step, *static, seed)
    leaves, treedef = jax.tree.flatten(shardings)
    return functools.partial(_sharded_train_step(static, treedef, tuple(leaves), mesh), seed)


@functools.lru_cache(maxsize=16)
def _sharded_train_step(static: tuple, treedef: Any, shardings: tuple, mesh: jax.sharding.Mesh) -> Callable:
    """The train step jitted for arrays laid out as `shardings` (flattened by `treedef`), one jit per layout."""
    return jax.jit(functools.partial(_train_step, *static), donate_argnums=1,
                   out_shardings=(jax.tree.unflatten(treedef, shardings), replicated(mesh)))


def make_eval_step(
    state: TrainState, *, logits_chunk: int = 0, response_window: int = 0
) -> Callable[[nnx.State, Batch], tuple]:
    """`eval_step(model_arrays, batch) -> (summed NLL, token count)`, jitted."""
    model_def = nnx.split(state.model())[0]
    return functools.partial(_jit_eval_step, model_def, logits_chunk, response_window)


def evaluate(
    eval_step: Callable, model_arrays: nnx.State, batches: grain.MapDataset, *, mesh=None, max_batches: int = 0,
    desc: str = "valid",
) -> float:
    """Mean response-token NLL over `batches` (all of them, or the first `max_batches`)."""
    count = len(batches) if max_batches <= 0 else min(max_batches, len(batches))
    sums = []
    for batch in progress(iter(batches), desc=desc, total=count, unit="batch"):
        if len(sums) == count:
            break
        sums.append(eval_step(model_arrays, put_batch(_batch_arrays(batch), mesh)))
    total, tokens = np.sum(np.asarray(jax.device_get(sums)), axis=0)
    return float(total / max(tokens, 1.0))


@dataclasses.dataclass
class LoopState:
    """The loop's own state, saved as JSON next to the arrays so a resumed run decides as the original would."""

    best_loss: Optional[float] = None
    best_step: Optional[int] = None
    bad_epochs: int = 0
    stopped_early: bool = False
    valid_losses: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FitResult:
    steps: int
    best_step: int
    best_valid_loss: Optional[float]
    stopped_early: bool
    train_loss: Optional[float]
    tokens_per_second: Optional[float]
    valid_losses: list


def fit(
    state: TrainState,
    train: grain.MapDataset,
    valid: Optional[grain.MapDataset],
    *,
    c: ml_collections.ConfigDict,
    stage_dir: str | Path,
    steps_per_epoch: int,
    total_steps: int,
    writer: Optional[MetricsWriter] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    response_window: int = 0,
    seed: int = 0,
    desc: str = "sft",
) -> tuple[TrainState, FitResult]:
    """Train `state` for `total_steps` on `train` (an endless or long enough MapDataset of batches).

    Resumes from the latest checkpoint in `stage_dir/checkpoints` (arrays, data
    iterator, loop state), evaluates on `valid` after every epoch and at the last
    step, keeps the best model (the last one without `valid`) in `stage_dir/best`,
    saves every `c.checkpoint_every` steps, at the end, and on SIGTERM (then
    raises `loop.Preempted`); a non-finite loss raises `loop.NonFiniteLoss`.
    `response_window`: see `loss_sums`; `seed`: of the dropout masks (`dropout_key`),
    when the model has dropout.
    """
    state = place_state(state, mesh)
    checkpoints = TrainCheckpoints(stage_dir, c.keep_checkpoints)
    best = BestModel(stage_dir)
    train_step = make_train_step(state, grad_accum_steps=c.grad_accum_steps, logits_chunk=c.logits_chunk,
                                 response_window=response_window, seed=seed, distill_weight=c.distill_weight)
    eval_step = make_eval_step(state, logits_chunk=c.logits_chunk, response_window=response_window)
    evaluating = valid is not None and c.eval_every_epoch
    epochs = _EpochEnd(eval_step, valid if evaluating else None, steps_per_epoch, c, mesh, best, checkpoints, writer)
    report = _Report(learning_rate_schedule(c, total_steps), writer is not None)
    iterator = iter(train)

    def step_fn(arrays: nnx.State, step: int) -> tuple[nnx.State, dict]:
        return train_step(arrays, put_batch(_batch_arrays(next(iterator)), mesh))

    try:
        result = train_loop(state.arrays, step_fn, total_steps=total_steps, checkpoints=checkpoints,
                            log_every=c.log_every, checkpoint_every=c.checkpoint_every, desc=desc, writer=writer,
                            data=iterator, hook=epochs, summarize=report)
    finally:
        checkpoints.close()
        best.close()
    loop = epochs.loop
    state = dataclasses.replace(state, arrays=result.arrays)
    return state, FitResult(
        steps=result.steps,
        best_step=int(loop.best_step),
        best_valid_loss=loop.best_loss,
        stopped_early=loop.stopped_early,
        train_loss=report.loss,
        tokens_per_second=report.tokens_per_second,
        valid_losses=loop.valid_losses,
    )


def _batch_arrays(batch: Batch) -> dict[str, Any]:
    """The arrays of a loader batch that the steps read (the loader's batches carry more)."""
    return {k: batch[k] for k in BATCH_KEYS + (SOFT_IDS, SOFT_WEIGHTS) if k in batch}


class _Report:
    """SFT's train rows: one per report, the window's mean loss, last gradient norm, learning rate and tokens/s."""

    def __init__(self, schedule: optax.Schedule, rows: bool):
        self.schedule, self.rows = schedule, rows
        self.loss: Optional[float] = None  # of the last step reported
        self.tokens_per_second: Optional[float] = None

    def __call__(self, logged: list[tuple[int, dict]], seconds: float) -> tuple[list, dict[str, str]]:
        step, metrics = logged[-1]
        self.tokens_per_second = float(sum(m["tokens"] for _, m in logged) / seconds)
        self.loss = float(metrics["loss"])
        postfix = {"loss": f"{self.loss:.4f}", "tok_s": f"{self.tokens_per_second:,.0f}"}
        if not self.rows:
            return [], postfix
        values = {
            "loss": np.mean([m["loss"] for _, m in logged]),
            "grad_norm": metrics["grad_norm"],
            "learning_rate": self.schedule(step - 1),
            "tokens_per_second": self.tokens_per_second,
        }
        return [(step, values)], postfix


class _EpochEnd(LoopHook):
    """After each epoch and the last step: the valid loss, the best model, early stopping (see `_end_of_epoch`)."""

    def __init__(self, eval_step: Callable, valid: Optional[grain.MapDataset], steps_per_epoch: int,
                 c: ml_collections.ConfigDict, mesh, best: BestModel, checkpoints: TrainCheckpoints,
                 writer: Optional[MetricsWriter]):
        self.eval_step, self.valid, self.steps_per_epoch, self.c, self.mesh = eval_step, valid, steps_per_epoch, c, mesh
        self.best, self.checkpoints, self.writer = best, checkpoints, writer
        self.loop = LoopState()

    @property
    def stop(self) -> bool:
        return self.loop.stopped_early

    def due(self, step: int, last: bool) -> bool:
        return last or (self.valid is not None and step % self.steps_per_epoch == 0)

    def run(self, step: int, arrays: nnx.State, last: bool) -> None:
        if self.valid is not None:
            jax.block_until_ready(arrays)
            valid_loss = evaluate(self.eval_step, arrays[0], self.valid, mesh=self.mesh,
                                  max_batches=self.c.max_eval_batches)
            self.checkpoints.wait()  # one orbax save in flight at a time (see TrainCheckpoints)
            _end_of_epoch(self.loop, step, valid_loss, self.c.patience, self.best, arrays, self.writer)
        if last and self.loop.best_step is None:  # nothing was evaluated: the last model is the output
            self.loop.best_step = step
            self.checkpoints.wait()
            self.best.save(step, arrays[0])

    def wait(self) -> None:
        self.best.wait()

    def state(self) -> dict:
        return dataclasses.asdict(self.loop)

    def restore(self, state: dict) -> None:
        self.loop = LoopState(**state)


def _end_of_epoch(
    loop: LoopState, step: int, valid_loss: float, patience: int, best: BestModel, arrays: nnx.State,
    writer: Optional[MetricsWriter],
) -> None:
    """Record the valid loss, keep the model if it is the best so far, and decide on early stopping."""
    loop.valid_losses.append([step, valid_loss])
    if writer is not None:
        writer.write(step, {"loss": valid_loss}, prefix="valid/")
    logging.info("step %d: valid loss %.4f (best %s)", step, valid_loss, loop.best_loss)
    if loop.best_loss is None or valid_loss < loop.best_loss:
        loop.best_loss, loop.best_step, loop.bad_epochs = valid_loss, step, 0
        best.save(step, arrays[0])
    else:
        loop.bad_epochs += 1
        loop.stopped_early = patience > 0 and loop.bad_epochs >= patience
