"""GRPO and S-DPO on the one training loop: killed (SIGKILL) or preempted (SIGTERM) mid-run and relaunched,
they end with exactly the parameters of an uninterrupted run, and log each step once."""
import functools
import json
import os
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import test_grpo as toy
from killing import kill_after_checkpoint
from sidjax.configs import base_config
from sidjax.decode.beam import TrieTables
from sidjax.model.config import ModelConfig
from sidjax.model.transformer import CausalLM
from sidjax.sid.codes import SidTrie
from sidjax.stages import rl
from sidjax.train import grpo, sdpo
from sidjax.train.checkpoint import TrainCheckpoints
from sidjax.train.loop import Preempted, train_loop
from sidjax.train.state import make_train_state
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.settings import settings_from

STEPS, CHECKPOINT_EVERY, BATCH, SEED = 6, 2, 2, 7


def _prompts():
    """Five left-padded toy prompts over text tokens 1..11 (batches of 2: a resume crosses an epoch)."""
    rng = np.random.default_rng(0)
    mask = np.arange(4)[None, :] >= rng.integers(0, 3, 5)[:, None]
    tokens = np.where(mask, rng.integers(1, 12, (5, 4)), 0).astype(np.int32)
    return rl.Prompts(tokens, mask, rng.integers(0, len(toy.SIDS), 5).astype(np.int32))


@nnx.jit
def _model():
    """test_grpo's toy model, initialised by one compiled call (eager init is many slow small dispatches)."""
    config = ModelConfig(vocab_size=24, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                         intermediate_size=64)
    return CausalLM(config, rngs=nnx.Rngs(0))


def _state(section):
    section.unlock()
    section.learning_rate = 3e-2
    return make_train_state(_model(), section, total_steps=STEPS)


@functools.cache
def _grpo_step_fn():
    section = base_config().grpo
    section.group_size = 4
    state = _state(section)
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=None)
    # The fixed whole-catalogue group (test_grpo) keeps the compile cheap; the update is GRPO's own.
    step = grpo.make_grpo_step(state.graphdef, state.wrt, toy.catalogue_rollout, settings)
    tables = TrieTables.from_trie(SidTrie.build(toy.SIDS, (4, 4, 4)), toy.OFFSETS)
    prompts = _prompts()
    ref_params = jax.tree.map(jnp.copy, state.model_arrays())
    return state, rl.grpo_step_fn(step, prompts, toy.SIDS[prompts.targets], ref_params, tables, batch_size=BATCH,
                                  seed=SEED, mesh=None)


@functools.cache
def _sdpo_step_fn():
    section = base_config().sdpo
    section.negatives = 2
    state = _state(section)
    step = sdpo.make_sdpo_step(state.graphdef, state.wrt, settings_from(sdpo.SdpoSettings, section))
    prompts = _prompts()

    def negatives(rows, i, arrays):
        return sdpo.random_negatives(prompts.targets[rows], len(toy.SIDS), 2, np.random.default_rng([SEED, i]))

    ref_params = jax.tree.map(jnp.copy, state.model_arrays())
    return state, rl.sdpo_step_fn(step, prompts, toy.SIDS, toy.OFFSETS, negatives, ref_params, batch_size=BATCH,
                                  seed=SEED, mesh=None)


STAGES = {"grpo": _grpo_step_fn, "sdpo": _sdpo_step_fn}


def _train(stage, workdir, slow=0.0, sigterm_at=None):
    """The run every check repeats; `slow` seconds per step give a killer time to act.

    The compiled step is built once per process; each run starts from a copy of the initial arrays (the step donates).
    """
    state, step_fn = STAGES[stage]()

    def step(arrays, i):
        if i == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(slow)
        return step_fn(arrays, i)

    checkpoints = TrainCheckpoints(workdir, keep=2)
    try:
        with MetricsWriter(workdir) as writer:
            result = train_loop(jax.tree.map(jnp.copy, state.arrays), step, total_steps=STEPS,
                                checkpoints=checkpoints, log_every=1, checkpoint_every=CHECKPOINT_EVERY, desc=stage,
                                writer=writer)
    finally:
        checkpoints.close()
    return [np.asarray(x) for x in jax.tree.leaves(result.arrays[0])]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return {stage: _train(stage, tmp_path_factory.mktemp(stage)) for stage in STAGES}


def _logged_steps(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows]


def _assert_equal(params, reference):
    assert len(params) == len(reference)
    for a, b in zip(params, reference):
        np.testing.assert_array_equal(a, b)


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_rl_resume
test_rl_resume._train({stage!r}, test_rl_resume.Path({workdir!r}), slow=0.3)
"""


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_with_sigkill_resumes_to_exactly_the_uninterrupted_parameters(tmp_path, uninterrupted, stage):
    workdir = tmp_path / stage
    kill_after_checkpoint(_CHILD.format(tests=str(Path(__file__).parent), stage=stage, workdir=str(workdir)),
                          workdir / "checkpoints", min_step=CHECKPOINT_EVERY)
    killed_at = TrainCheckpoints(workdir, keep=2).latest_step()
    assert killed_at is not None and CHECKPOINT_EVERY <= killed_at < STEPS
    _assert_equal(_train(stage, workdir), uninterrupted[stage])
    assert _logged_steps(workdir) == list(range(1, STEPS + 1))


def test_sigterm_mid_grpo_saves_a_checkpoint_raises_preempted_and_resumes_exactly(tmp_path, uninterrupted):
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as stopped:
        _train("grpo", tmp_path, sigterm_at=2)
    assert stopped.value.step == 3  # the step under way finishes, then the loop saves and stops
    assert TrainCheckpoints(tmp_path, keep=2).latest_step() == 3
    assert signal.getsignal(signal.SIGTERM) is handler
    _assert_equal(_train("grpo", tmp_path), uninterrupted["grpo"])
    assert _logged_steps(tmp_path) == list(range(1, STEPS + 1))
