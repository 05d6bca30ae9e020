"""Supervised fine-tuning: the jitted train/eval steps and the resumable training loop.

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
import signal
import time
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
from jax.sharding import NamedSharding, PartitionSpec

from sidjax.data.loader import EXAMPLE_MASK
from sidjax.model.transformer import positions_from_mask
from sidjax.parallel.rules import logical_spec
from sidjax.train import losses
from sidjax.train.checkpoint import BestModel, TrainCheckpoints
from sidjax.train.state import TrainState, learning_rate_schedule
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.progress import progress

Batch = Mapping[str, Any]
BATCH_KEYS = ("tokens", "attention_mask", "loss_mask", EXAMPLE_MASK)


class Preempted(RuntimeError):
    """Raised after the SIGTERM checkpoint is written: the stage did not finish and must be relaunched."""

    def __init__(self, desc: str, step: int):
        super().__init__(f"{desc}: SIGTERM at step {step}; checkpoint saved, relaunch to resume")
        self.step = step


def loss_sums(
    model: nnx.Module, batch: Batch, logits_chunk: int = 0, response_window: int = 0,
    dropout_key: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array]:
    """(summed next-token NLL over the response tokens, their number) of one batch.

    `response_window` > 0 computes logits only on that many positions around each
    row's (contiguous) response instead of on every position. `dropout_key` (train
    step only) applies the model's dropout.
    """
    attention = batch["attention_mask"]
    tokens = batch["tokens"]
    learn = batch["loss_mask"] & attention & batch[EXAMPLE_MASK][:, None]
    if response_window <= 0:
        scores = losses.token_logprobs(model, tokens, positions_from_mask(attention), attention,
                                       chunk_size=logits_chunk, dropout_key=dropout_key)
        return losses.masked_nll(scores.logprobs, losses.next_token_mask(learn))
    hidden, _ = model.hidden_states(tokens, positions_from_mask(attention), attention_mask=attention,
                                    dropout_key=dropout_key)
    hidden, targets, mask = losses.response_window(hidden, tokens, learn, response_window)
    scores = losses.hidden_token_logprobs(hidden, targets, model.logits, chunk_size=logits_chunk)
    return losses.masked_nll(scores.logprobs, mask)


def _micro_batches(batch: Batch, accum: int) -> Batch:
    """[B, ...] -> [accum, B/accum, ...], micro-batch k = rows k, k+accum, ...: the batch axis keeps its sharding."""

    def split(x):
        return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


# Folded into the seed's key first, so dropout masks never reuse the keys nnx.Rngs(seed) initialised weights with.
_DROPOUT_STREAM = 0x64726F70  # "drop"


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
    """The dropout key of optimizer step `step`.

    A function of (seed, step) only, so a resumed run redraws exactly the masks an uninterrupted one would.
    """
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _DROPOUT_STREAM), step)


def _train_step(graphdef: nnx.GraphDef, wrt: Any, accum: int, logits_chunk: int, window: int, seed: int,
                arrays: nnx.State, batch: Batch):
    model, optimizer = nnx.merge(graphdef, arrays)
    model_def, params, rest = nnx.split(model, wrt, ...)
    key = None
    if model.config.dropout > 0.0:  # at 0 the step holds no random-number ops at all
        key = dropout_key(seed, optimizer.step[...])

    def loss(p, micro, micro_key):
        return loss_sums(nnx.merge(model_def, p, rest), micro, logits_chunk, window, micro_key)

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


def _replicated(mesh: Optional[jax.sharding.Mesh]):
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def place_state(state: TrainState, mesh: Optional[jax.sharding.Mesh]) -> TrainState:
    """Put every array of the state on `mesh`: sharded params keep their layout, the rest is replicated."""
    if mesh is None:
        return state

    def place(x):
        if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh:
            return x
        return jax.device_put(x, _replicated(mesh))

    return dataclasses.replace(state, arrays=jax.tree.map(place, state.arrays))


# Module-level jits with the graph definition static: a second fit of the same model (a resumed run,
# reason_sft after sft) reuses the compiled step.
_jit_train_step = jax.jit(_train_step, static_argnums=(0, 1, 2, 3, 4, 5), donate_argnums=6)
_jit_eval_step = jax.jit(_eval_step, static_argnums=(0, 1, 2))


def make_train_step(
    state: TrainState, *, grad_accum_steps: int = 1, logits_chunk: int = 0, response_window: int = 0,
    seed: int = 0,
) -> Callable[[nnx.State, Batch], tuple[nnx.State, dict]]:
    """`step(arrays, batch) -> (arrays, metrics)`, jitted, donating `arrays` and keeping their shardings.

    With `model.config.dropout` > 0 each step draws its masks from `dropout_key(seed, optimizer step)`.
    """
    static = (state.graphdef, state.wrt, grad_accum_steps, logits_chunk, response_window, seed)
    shardings = jax.tree.map(lambda x: x.sharding, state.arrays)
    mesh = next((s.mesh for s in jax.tree.leaves(shardings) if isinstance(s, NamedSharding)), None)
    if mesh is None:
        return functools.partial(_jit_train_step, *static)
    return jax.jit(functools.partial(_train_step, *static), donate_argnums=0,
                   out_shardings=(shardings, _replicated(mesh)))


def make_eval_step(
    state: TrainState, *, logits_chunk: int = 0, response_window: int = 0
) -> Callable[[nnx.State, Batch], tuple]:
    """`eval_step(model_arrays, batch) -> (summed NLL, token count)`, jitted."""
    model_def = nnx.split(state.model())[0]
    return functools.partial(_jit_eval_step, model_def, logits_chunk, response_window)


def shard_batch(batch: Batch, mesh: Optional[jax.sharding.Mesh]) -> dict[str, jax.Array]:
    """This process's rows of a global batch, as one array split over the mesh's batch axes."""
    batch = {k: batch[k] for k in BATCH_KEYS}
    if mesh is None:
        return jax.device_put(batch)
    return {
        k: jax.make_array_from_process_local_data(
            NamedSharding(mesh, logical_spec(("activation_batch",) + (None,) * (np.ndim(v) - 1))), np.asarray(v)
        )
        for k, v in batch.items()
    }


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
        sums.append(eval_step(model_arrays, shard_batch(batch, mesh)))
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


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps (a step is never cut in half)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)


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
    raises `Preempted`). `response_window`: see `loss_sums`; `seed`: of the dropout masks
    (`dropout_key`), when the model has dropout.
    """
    state = place_state(state, mesh)
    checkpoints = TrainCheckpoints(stage_dir, c.keep_checkpoints)
    best = BestModel(stage_dir)
    train_step = make_train_step(state, grad_accum_steps=c.grad_accum_steps, logits_chunk=c.logits_chunk,
                                 response_window=response_window, seed=seed)
    eval_step = make_eval_step(state, logits_chunk=c.logits_chunk, response_window=response_window)
    schedule = learning_rate_schedule(c, total_steps)
    iterator = iter(train)
    evaluating = valid is not None and c.eval_every_epoch
    loop = LoopState()
    arrays = state.arrays
    step = 0
    latest = checkpoints.latest_step()
    if latest is not None:
        arrays, data_state, meta = checkpoints.restore(latest, arrays)
        iterator.set_state(data_state)
        loop = LoopState(**meta)
        step = latest
        logging.info("%s: resumed from step %d of %d", desc, step, total_steps)

    # One orbax save in flight at a time: two managers saving at once collide at orbax's
    # multi-process barriers ("Barrier ... is already ongoing") and hang the job.
    def save() -> None:
        best.wait()
        checkpoints.save(step, arrays, iterator.get_state(), dataclasses.asdict(loop))

    train_loss = tokens_per_second = None
    bar = progress(desc=desc, total=total_steps, unit="step")
    bar.update(step)
    pending: list[dict] = []
    last_log = time.perf_counter()
    try:
        with _SigtermFlag() as sigterm:
            while step < total_steps and not loop.stopped_early:
                arrays, metrics = train_step(arrays, shard_batch(next(iterator), mesh))
                step += 1
                pending.append(metrics)
                bar.update(1)
                if step % c.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    train_loss, tokens_per_second = _report(step, jax.device_get(pending), now - last_log,
                                                            schedule, bar, writer)
                    last_log, pending = now, []
                last = step == total_steps
                if evaluating and (step % steps_per_epoch == 0 or last):
                    jax.block_until_ready(arrays)
                    evaluated_at = time.perf_counter()
                    valid_loss = evaluate(eval_step, arrays[0], valid, mesh=mesh, max_batches=c.max_eval_batches)
                    checkpoints.wait()
                    _end_of_epoch(loop, step, valid_loss, c.patience, best, arrays, writer)
                    # Steps still pending ran before the evaluation: keep them in the window, minus its time.
                    last_log += time.perf_counter() - evaluated_at
                if last and loop.best_step is None:  # nothing was evaluated: the last model is the output
                    loop.best_step = step
                    checkpoints.wait()
                    best.save(step, arrays[0])
                if step % c.checkpoint_every == 0 or last or loop.stopped_early or sigterm.raised:
                    save()
                if sigterm.raised:
                    checkpoints.wait()
                    raise Preempted(desc, step)
        checkpoints.wait()
        best.wait()
    finally:
        bar.close()
        checkpoints.close()
        best.close()
    state = dataclasses.replace(state, arrays=arrays)
    return state, FitResult(
        steps=step,
        best_step=int(loop.best_step),
        best_valid_loss=loop.best_loss,
        stopped_early=loop.stopped_early,
        train_loss=train_loss,
        tokens_per_second=tokens_per_second,
        valid_losses=loop.valid_losses,
    )


def _report(
    step: int, logged: list[dict], seconds: float, schedule: optax.Schedule, bar, writer: Optional[MetricsWriter]
) -> tuple[float, float]:
    """Show and write the metrics of the steps since the last report; returns (last loss, tokens/s)."""
    tokens_per_second = float(sum(m["tokens"] for m in logged) / seconds)
    loss = float(logged[-1]["loss"])
    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_second:,.0f}")
    if writer is not None:
        metrics = {
            "loss": np.mean([m["loss"] for m in logged]),
            "grad_norm": logged[-1]["grad_norm"],
            "learning_rate": schedule(step - 1),
            "tokens_per_second": tokens_per_second,
        }
        writer.write(step, metrics, prefix="train/")
    return loss, tokens_per_second


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
