"""The one training loop of every stage that trains an LM: SFT, reasoning SFT, GRPO and S-DPO.

A stage hands in `step_fn(arrays, step) -> (arrays, metrics)` (step counts from 0;
it draws its own batch) and gets: a progress bar; metrics kept on device and
fetched every `log_every` steps, then written as `train/...` rows; checkpoints
every `checkpoint_every` steps, at the end, on an early stop and on SIGTERM
(then `Preempted`); exact resume of arrays, data-iterator state and the hook's
state; metrics rows of redone steps dropped; and a stop, with no checkpoint of
the broken state, at the first step whose loss is not finite.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import time
from typing import Callable, Optional, Protocol

import jax
from absl import logging
from flax import nnx

from sidjax.train.checkpoint import TrainCheckpoints
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.progress import progress

StepFn = Callable[[nnx.State, int], tuple[nnx.State, dict]]
# (fetched (step, metrics) of the steps since the last report, their wall seconds) ->
# (rows (step, values) to write under "train/", progress-bar postfix)
Summarize = Callable[[list[tuple[int, dict]], float], tuple[list[tuple[int, dict[str, float]]], dict[str, str]]]


class Preempted(RuntimeError):
    """Raised after the SIGTERM checkpoint is written: the stage did not finish and must be relaunched."""

    def __init__(self, desc: str, step: int):
        super().__init__(f"{desc}: SIGTERM at step {step}; checkpoint saved, relaunch to resume")
        self.step = step


class NonFiniteLoss(FloatingPointError):
    """A step's loss is NaN or infinite: training stops, and that state is never checkpointed."""

    def __init__(self, desc: str, step: int, loss: float, checkpoint: Optional[int]):
        last = "no checkpoint yet" if checkpoint is None else f"the last checkpoint is step {checkpoint}"
        super().__init__(f"{desc}: the loss is {loss} at step {step}; stopped without saving this state ({last})")
        self.step = step


class SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps (a step is never cut in half)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self) -> "SigtermFlag":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class Resumable(Protocol):
    """A data iterator whose position is checkpointed (grain's DatasetIterator)."""

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


class LoopHook:
    """Work between steps that the loop runs but does not know (SFT's per-epoch evaluation and best model).

    Its `state()` (JSON) is saved with every checkpoint and handed back to `restore` on resume.
    """

    stop = False  # set by `run` to end training early (the loop then checkpoints and returns)

    def due(self, step: int, last: bool) -> bool:
        """Whether `run` has work after `step`; the loop first checks that the steps so far are finite."""
        return False

    def run(self, step: int, arrays: nnx.State, last: bool) -> None:
        """The work after `step`; its time is left out of the throughput the reports show."""

    def wait(self) -> None:
        """Finish the hook's own asynchronous writes: called before every checkpoint save (one orbax save in flight)."""

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        """Take back what `state()` returned when the checkpoint was written."""


def per_step_rows(logged: list[tuple[int, dict]], seconds: float) -> tuple[list[tuple[int, dict]], dict[str, str]]:
    """Every step's metrics as its own row, with the window's seconds per step (the RL stages' report)."""
    per_step = seconds / max(len(logged), 1)
    rows = [(step, {**{k: float(v) for k, v in m.items()}, "seconds_per_step": per_step}) for step, m in logged]
    last = rows[-1][1]
    return rows, {"reward": f"{last.get('reward/total', last.get('loss')):.4f}"}


@dataclasses.dataclass
class LoopResult:
    arrays: nnx.State
    steps: int  # the step the loop ended at (total_steps, or earlier on an early stop)
    history: list[dict[str, float]]  # the rows written by this process's run: {"step": ..., metric: value}


def train_loop(
    arrays: nnx.State,
    step_fn: StepFn,
    *,
    total_steps: int,
    checkpoints: TrainCheckpoints,
    log_every: int,
    checkpoint_every: int,
    desc: str,
    writer: Optional[MetricsWriter] = None,
    data: Optional[Resumable] = None,
    hook: Optional[LoopHook] = None,
    summarize: Summarize = per_step_rows,
    loss_key: str = "loss",
) -> LoopResult:
    """Run `step_fn` from the latest intact checkpoint in `checkpoints` (or from `arrays` at step 0) to `total_steps`.

    `data`: the iterator `step_fn` draws from, if it has a position to checkpoint (without one,
    `step_fn` must derive its batch from the step number). The caller closes `checkpoints`.
    """
    hook = hook or LoopHook()
    step = 0
    latest = None
    restored = checkpoints.restore_latest(arrays)  # the newest intact checkpoint (a damaged one is set aside)
    if restored is not None:
        latest, arrays, data_state, meta = restored
        if data is not None:
            data.set_state(data_state)
        hook.restore(meta)
        step = latest
        logging.info("%s: resumed from step %d of %d", desc, step, total_steps)
    if writer is not None:
        writer.forget_after(step)
    saved = latest

    def check_finite(pending: list[tuple[int, dict]]) -> None:
        for logged_step, loss in jax.device_get([(s, m[loss_key]) for s, m in pending]):
            if not math.isfinite(float(loss)):
                raise NonFiniteLoss(desc, logged_step, float(loss), saved)

    history: list[dict[str, float]] = []
    pending: list[tuple[int, dict]] = []
    bar = progress(desc=desc, total=total_steps, unit="step")
    bar.update(step)
    last_log = time.perf_counter()
    try:
        with SigtermFlag() as sigterm:
            while step < total_steps and not hook.stop:
                arrays, metrics = step_fn(arrays, step)
                step += 1
                pending.append((step, metrics))
                bar.update(1)
                last = step == total_steps
                if step % log_every == 0 or last:
                    fetched = jax.device_get(pending)
                    check_finite(fetched)
                    now = time.perf_counter()
                    rows, postfix = summarize(fetched, now - last_log)
                    last_log, pending = now, []
                    bar.set_postfix(**postfix)
                    for row_step, values in rows:
                        if writer is not None:
                            writer.write(row_step, values, prefix="train/")
                        history.append({"step": row_step, **values})
                if hook.due(step, last):
                    check_finite(pending)
                    began = time.perf_counter()
                    hook.run(step, arrays, last)
                    last_log += time.perf_counter() - began  # pending steps ran before it: keep them, minus its time
                if step % checkpoint_every == 0 or last or hook.stop or sigterm.raised:
                    check_finite(pending)
                    hook.wait()
                    checkpoints.save(step, arrays, {"step": step} if data is None else data.get_state(), hook.state())
                    saved = step
                if sigterm.raised:
                    checkpoints.wait()
                    raise Preempted(desc, step)
        checkpoints.wait()
        hook.wait()
    finally:
        bar.close()
    return LoopResult(arrays=arrays, steps=step, history=history)
