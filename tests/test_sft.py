"""The SFT step (loss, gradient accumulation) and loop (eval, early stopping, exact resume after SIGKILL/SIGTERM)."""
import os
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from killing import kill_after_checkpoint
from sidjax.configs import base_config
from sidjax.data import loader
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.parallel.mesh import make_mesh
from sidjax.parallel.placement import place_state
from sidjax.train import sft
from sidjax.train.loop import Preempted
from sidjax.train.checkpoint import BestModel, TrainCheckpoints
from sidjax.train.state import make_train_state

V, N, T = 64, 48, 12
TOTAL_STEPS, STEPS_PER_EPOCH = 12, 6
# The loop tests train with dropout: an exact resume must redraw the masks of the steps it repeats.
DROPOUT, DROPOUT_SEED = 0.1, 3


def _records(seed=0):
    """Right-padded sequences whose second half repeats the first token: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, V, (N, T)).astype(np.int32)
    tokens[:, T // 2 :] = tokens[:, :1]
    lengths = rng.integers(T - 3, T + 1, N)
    attention = np.arange(T)[None, :] < lengths[:, None]
    loss = attention & (np.arange(T)[None, :] >= T // 2)
    return {"tokens": np.where(attention, tokens, 0), "attention_mask": attention, "loss_mask": loss}


def _section(**overrides):
    c = base_config().sft
    c.update(dict(batch_size=8, learning_rate=3e-3, warmup_steps=2, checkpoint_every=3, log_every=2))
    c.update(overrides)
    return c


@nnx.jit(static_argnums=(0, 1))
def _model(seed, dropout=0.0):
    """The tiny test model, initialised by one compiled call (eager init is many slow small dispatches)."""
    return CausalLM(preset("tiny", V).replace(num_layers=1, dropout=dropout), rngs=nnx.Rngs(seed))


def _state(c, total=TOTAL_STEPS, dropout=0.0):
    return make_train_state(_model(0, dropout), c, total)


def _train(workdir, *, slow=0.0, **overrides):
    """The run every exact-resume check repeats; `slow` seconds per batch give a killer time to act."""
    c = _section(**overrides)
    train = loader.batches(_records(), batch_size=c.batch_size, seed=1, num_epochs=None)
    if slow:
        train = train.map(lambda batch: (time.sleep(slow), batch)[1])
    valid = loader.batches(_records(seed=2), batch_size=16, shuffle=False, drop_remainder=False)
    return sft.fit(_state(c, dropout=DROPOUT), train, valid, c=c, stage_dir=workdir, steps_per_epoch=STEPS_PER_EPOCH,
                   total_steps=TOTAL_STEPS, seed=DROPOUT_SEED)


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.model_arrays())]


def _batch(records, rows):
    batch = {k: v[rows] for k, v in records.items()}
    batch[loader.EXAMPLE_MASK] = np.ones(len(rows), bool)
    return batch


@pytest.mark.parametrize("window", [0, 6])
def test_loss_sums_equal_a_full_logits_reference(window):
    model = _model(3)
    batch = _batch(_records(), np.arange(4))
    batch[loader.EXAMPLE_MASK] = np.array([True, True, True, False])
    total, count = nnx.jit(sft.loss_sums, static_argnums=(2, 3))(model, jax.tree.map(jnp.asarray, batch), 5, window)
    tokens, attention = batch["tokens"], batch["attention_mask"]
    positions = np.maximum(np.cumsum(attention, 1) - 1, 0)
    forward = nnx.jit(lambda m, t, p, a: m(t, p, attention_mask=a)[0])
    logits = forward(model, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(attention))
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    want_total, want_count = 0.0, 0
    for b in range(3):
        for t in range(1, T):
            if batch["loss_mask"][b, t] and attention[b, t]:
                want_total -= logp[b, t - 1, tokens[b, t]]
                want_count += 1
    assert float(count) == want_count
    assert float(total) == pytest.approx(want_total, rel=1e-5)


@pytest.mark.parametrize("window", [0, 6])
def test_distilled_loss_sums_mix_the_hard_and_the_soft_targets(window):
    """(1 - w) x NLL + w x cross-entropy against the soft targets, token by token, from full logits."""
    model, weight, k = _model(3), 0.4, 3
    batch = _batch(_records(), np.arange(4))
    rng = np.random.default_rng(5)
    batch[sft.SOFT_IDS] = rng.integers(0, V, (4, T, k)).astype(np.int32)
    soft = rng.random((4, T, k)).astype(np.float32)
    batch[sft.SOFT_WEIGHTS] = soft / soft.sum(-1, keepdims=True)
    total, count = nnx.jit(sft.loss_sums, static_argnums=(2, 3, 5))(model, jax.tree.map(jnp.asarray, batch), 5,
                                                                     window, None, weight)
    tokens, attention = batch["tokens"], batch["attention_mask"]
    positions = np.maximum(np.cumsum(attention, 1) - 1, 0)
    logits = nnx.jit(lambda m, t, p, a: m(t, p, attention_mask=a)[0])(
        model, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(attention))
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    want, want_count = 0.0, 0
    for b in range(4):
        for t in range(1, T):
            if batch["loss_mask"][b, t] and attention[b, t]:
                hard = -logp[b, t - 1, tokens[b, t]]
                cross = -np.sum(batch[sft.SOFT_WEIGHTS][b, t] * logp[b, t - 1, batch[sft.SOFT_IDS][b, t]])
                want += (1 - weight) * hard + weight * cross
                want_count += 1
    assert float(count) == want_count
    assert float(total) == pytest.approx(want, rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch():
    batch = jax.tree.map(jnp.asarray, _batch(_records(), np.arange(8)))
    results = []
    for accum in (1, 4):
        # eps >> |g| makes Adam's first update ~ lr * g, so parameters compare the gradients themselves.
        c = _section(grad_accum_steps=accum, warmup_steps=0, adam_eps=1.0, learning_rate=1.0)
        state = _state(c)
        step = sft.make_train_step(state, grad_accum_steps=accum)
        arrays, metrics = step(state.arrays, batch)
        results.append((_params(state.__class__(state.graphdef, arrays, state.wrt)), float(metrics["loss"])))
    (p1, l1), (p4, l4) = results
    assert l1 == pytest.approx(l4, rel=1e-6)
    for a, b in zip(p1, p4):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _first_step_losses(dropout, repeats):
    """Train losses of `repeats` first steps (two accumulated micro-batches) from the same weights; eval NLL sum."""
    batch = jax.tree.map(jnp.asarray, _batch(_records(), np.arange(8)))
    state = _state(_section(grad_accum_steps=2), dropout=dropout)
    eval_total, _ = sft.make_eval_step(state)(state.arrays[0], batch)
    step = sft.make_train_step(state, grad_accum_steps=2, seed=DROPOUT_SEED)
    losses = [float(step(jax.tree.map(jnp.copy, state.arrays), batch)[1]["loss"]) for _ in range(repeats)]
    return losses, float(eval_total)


@pytest.mark.slow
def test_dropout_changes_the_train_loss_repeatably_and_never_the_eval_loss():
    (plain,), plain_eval = _first_step_losses(0.0, 1)
    (dropped, again), dropped_eval = _first_step_losses(0.3, 2)
    assert dropped != plain and again == dropped
    assert dropped_eval == plain_eval


def test_dropout_keys_depend_on_the_seed_and_the_step_only():
    data = lambda key: tuple(np.asarray(jax.random.key_data(key)).ravel())
    keys = {data(sft.dropout_key(seed, jnp.int32(step))) for seed in (0, 1) for step in (0, 1, 2)}
    assert len(keys) == 6
    assert data(sft.dropout_key(1, jnp.int32(2))) == data(sft.dropout_key(1, jnp.int32(2)))
    assert data(nnx.Rngs(1).params()) not in keys  # never a weight-initialisation key


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_only_a_step_with_dropout_draws_random_numbers(dropout):
    state = _state(_section(), dropout=dropout)
    batch = jax.tree.map(jnp.asarray, _batch(_records(), np.arange(8)))
    jaxpr = jax.make_jaxpr(sft._train_step, static_argnums=(0, 1, 2, 3, 4, 5))(
        state.graphdef, state.wrt, 1, 0, 0, 0.0, jnp.int32(0), state.arrays, batch)
    assert ("random_bits" in str(jaxpr)) == (dropout > 0)


@pytest.mark.parametrize("on_mesh", [False, True])
def test_steps_of_another_seed_reuse_the_compiled_step_and_draw_other_masks(on_mesh):
    """A second lineage (seed_offset) must not recompile its SFT step: the seed is an argument, not a constant,
    and a new model under the same settings has an equal graph definition (one optimizer transformation)."""
    mesh = make_mesh(base_config().mesh) if on_mesh else None
    batch = jax.tree.map(jnp.asarray, _batch(_records(), np.arange(8)))
    losses, jitted, compiled = {}, set(), []
    for seed in (11, 12):
        state = place_state(_state(_section(), dropout=0.3), mesh)
        step = sft.make_train_step(state, seed=seed)
        jitted.add(step.func)
        compiled.append(step.func._cache_size())
        _, metrics = step(state.arrays, batch)
        losses[seed] = float(metrics["loss"])
    assert len(jitted) == 1 and jitted.pop()._cache_size() == compiled[1] == compiled[0] + 1
    assert losses[11] != losses[12]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: (its directory, final state, result)."""
    workdir = tmp_path_factory.mktemp("reference")
    return (workdir, *_train(workdir))


def test_fit_lowers_the_loss_keeps_the_best_model_and_resumes_a_finished_run(reference):
    tmp_path, state, result = reference
    assert result.steps == TOTAL_STEPS and len(result.valid_losses) == 2
    first, second = result.valid_losses[0][1], result.valid_losses[1][1]
    assert second < first
    assert result.best_step == TOTAL_STEPS and result.best_valid_loss == pytest.approx(second)
    assert BestModel(tmp_path).latest_step() == TOTAL_STEPS
    assert TrainCheckpoints(tmp_path, keep=2).latest_step() == TOTAL_STEPS
    again, rerun = _train(tmp_path)
    assert rerun.best_step == result.best_step and rerun.valid_losses == result.valid_losses
    for a, b in zip(_params(state), _params(again)):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    loop, best = sft.LoopState(), BestModel(tmp_path)
    arrays = {0: nnx.state(_model(0))}
    for step, loss in [(1, 3.0), (2, 2.0), (3, 2.5), (4, 2.1)]:
        assert not loop.stopped_early
        sft._end_of_epoch(loop, step, loss, 2, best, arrays, None)
    best.wait()
    assert loop.stopped_early and loop.best_step == 2 and loop.best_loss == 2.0
    assert best.latest_step() == 2


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_sft
test_sft._train({workdir!r}, slow=0.3)
"""


def test_a_run_killed_with_sigkill_resumes_to_exactly_the_uninterrupted_parameters(tmp_path, reference):
    workdir = tmp_path / "killed"
    kill_after_checkpoint(_CHILD.format(tests=str(Path(__file__).parent), workdir=str(workdir)),
                          workdir / "checkpoints", min_step=6)
    killed_at = TrainCheckpoints(workdir, keep=2).latest_step()
    assert killed_at is not None and 6 <= killed_at < TOTAL_STEPS
    resumed, _ = _train(workdir)
    for a, b in zip(_params(reference[1]), _params(resumed)):
        np.testing.assert_array_equal(a, b)


def test_sigterm_saves_a_checkpoint_and_raises_preempted(tmp_path):
    calls = []

    def terminate_at_fifth_batch(batch):
        # grain prefetches, so the signal arrives while some earlier step runs.
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    c = _section()
    handler = signal.getsignal(signal.SIGTERM)
    train = loader.batches(_records(), batch_size=8, seed=1, num_epochs=None).map(terminate_at_fifth_batch)
    with pytest.raises(Preempted) as stopped:
        sft.fit(_state(c), train, None, c=c, stage_dir=tmp_path, steps_per_epoch=STEPS_PER_EPOCH,
                total_steps=TOTAL_STEPS)
    assert 1 <= stopped.value.step < TOTAL_STEPS
    assert TrainCheckpoints(tmp_path, keep=2).latest_step() == stopped.value.step
    assert signal.getsignal(signal.SIGTERM) is handler
