"""The one training loop with a counting step: NaN stop without a checkpoint, metrics logged once after a resume."""
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from sidjax.train.checkpoint import TrainCheckpoints
from sidjax.train.loop import NonFiniteLoss, train_loop
from sidjax.utils.metrics import MetricsWriter


def _arrays():
    return {"w": jnp.zeros(3)}, {"count": jnp.zeros((), jnp.int32)}


def _counting_step(loss_of_step, fail_at=None):
    """Adds 1 to every array; step i (from 0) reports `loss_of_step(i)`; raises at step `fail_at` (a crash)."""

    def step_fn(arrays, i):
        if i == fail_at:
            raise RuntimeError("crash")
        model, optimizer = arrays
        return ({"w": model["w"] + 1.0}, {"count": optimizer["count"] + 1}), {"loss": jnp.float32(loss_of_step(i))}

    return step_fn


def _run(workdir, step_fn, total, log_every=1, checkpoint_every=2, writer=None):
    checkpoints = TrainCheckpoints(workdir, keep=3)
    try:
        return train_loop(_arrays(), step_fn, total_steps=total, checkpoints=checkpoints, log_every=log_every,
                          checkpoint_every=checkpoint_every, desc="grpo", writer=writer)
    finally:
        checkpoints.close()


@pytest.mark.parametrize("log_every, nan_step, last_good", [(3, 5, 4), (10, 4, 2)])
def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_it_out_of_the_checkpoints(
        tmp_path, log_every, nan_step, last_good):
    # log_every=10: the NaN is found at the checkpoint after it, before anything is saved.
    step_fn = _counting_step(lambda i: math.nan if i + 1 == nan_step else 1.0)
    with pytest.raises(NonFiniteLoss, match=f"grpo: the loss is nan at step {nan_step}") as stopped:
        _run(tmp_path, step_fn, total=8, log_every=log_every)
    assert stopped.value.step == nan_step
    checkpoints = TrainCheckpoints(tmp_path, keep=3)
    assert checkpoints.latest_step() == last_good
    arrays, _, _ = checkpoints.restore(last_good, _arrays())
    checkpoints.close()
    np.testing.assert_array_equal(arrays[0]["w"], np.full(3, last_good))


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_resumed_run_logs_each_step_once(tmp_path):
    loss = lambda i: float(i + 1)
    with MetricsWriter(tmp_path) as writer, pytest.raises(RuntimeError, match="crash"):
        _run(tmp_path, _counting_step(loss, fail_at=3), total=5, writer=writer)  # steps 1-3 logged, checkpoint 2
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3]
    with open(tmp_path / "metrics.jsonl", "a") as jsonl:
        jsonl.write('{"step": 9, "train/lo')  # a line cut short by a kill
    with MetricsWriter(tmp_path) as writer:
        result = _run(tmp_path, _counting_step(loss), total=5, writer=writer)
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["train/loss"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [h["step"] for h in result.history] == [3, 4, 5]
    np.testing.assert_array_equal(result.arrays[0]["w"], np.full(3, 5.0))
