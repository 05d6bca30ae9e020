"""Schedules, the AdamW chain against a plain-numpy reference, frozen rows, the train state."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.configs import base_config
from sidjax.train.state import TrainState, frozen_lm, learning_rate_schedule, make_train_state, make_tx


def _section(**overrides):
    c = base_config().sft
    c.update(overrides)
    return c


def test_warmup_then_cosine_to_end_ratio():
    c = _section(learning_rate=1.0, warmup_steps=4, decay="cosine", end_lr_ratio=0.1)
    lr = learning_rate_schedule(c, total_steps=14)
    assert [float(lr(s)) for s in range(5)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # cosine over the 10 steps after warmup: 0.1 + 0.9 * (1 + cos(pi * k / 10)) / 2
    for k in (0, 3, 5, 10):
        assert float(lr(4 + k)) == pytest.approx(0.1 + 0.9 * (1 + np.cos(np.pi * k / 10)) / 2, rel=1e-6)


def test_linear_and_constant_decay():
    lin = learning_rate_schedule(_section(learning_rate=2.0, warmup_steps=0, decay="linear", end_lr_ratio=0.0), 10)
    assert [float(lin(s)) for s in (0, 5, 10)] == pytest.approx([2.0, 1.0, 0.0])
    const = learning_rate_schedule(_section(learning_rate=2.0, warmup_steps=2, decay="constant"), 10)
    assert [float(const(s)) for s in (0, 1, 2, 9)] == pytest.approx([0.0, 1.0, 2.0, 2.0])


def _reference_adamw(params, grads_per_step, c, total_steps):
    """AdamW with global-norm clipping and decay on matrices only, written out in numpy."""
    lr = learning_rate_schedule(c, total_steps)
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in p.items()}
    nu = {k: np.zeros_like(v) for k, v in p.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
        scale = min(1.0, c.max_grad_norm / norm)
        for k in p:
            g = grads[k] * scale
            mu[k] = c.adam_b1 * mu[k] + (1 - c.adam_b1) * g
            nu[k] = c.adam_b2 * nu[k] + (1 - c.adam_b2) * g * g
            update = (mu[k] / (1 - c.adam_b1**t)) / (np.sqrt(nu[k] / (1 - c.adam_b2**t)) + c.adam_eps)
            if p[k].ndim >= 2:
                update = update + c.weight_decay * p[k]
            p[k] = p[k] - float(lr(t - 1)) * update
    return p


def test_adamw_chain_matches_numpy_reference():
    c = _section(learning_rate=0.1, warmup_steps=1, weight_decay=0.3, max_grad_norm=0.5)
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(4,)).astype(np.float32)}
    steps = [{k: (rng.normal(size=v.shape) * 3).astype(np.float32) for k, v in params.items()} for _ in range(4)]
    tx = make_tx(c, total_steps=4)
    state = tx.init(params)
    got = dict(params)
    for grads in steps:
        updates, state = tx.update(grads, state, got)
        got = jax.tree.map(lambda p, u: p + u, got, updates)
    want = _reference_adamw(params, steps, c, 4)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


class _Tiny(nnx.Module):
    def __init__(self):
        self.embed = nnx.Param(jnp.ones((6, 2)))
        self.bias = nnx.Param(jnp.ones((2,)))


def test_update_scale_keeps_frozen_rows_exactly_and_trains_the_rest():
    rows = jnp.arange(6)[:, None] >= 4  # only the last two rows train

    def scale(path, _):
        return rows if path == ("embed",) else 0.0

    state = make_train_state(_Tiny(), _section(weight_decay=0.1, warmup_steps=0), 5, update_scale=scale)
    model, optimizer = state.merge()
    before = np.array(model.embed[...])
    for _ in range(3):
        grads = nnx.state(model, nnx.Param)
        grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), grads)
        optimizer.update(model, grads)
    after = np.array(model.embed[...])
    np.testing.assert_array_equal(after[:4], before[:4])
    assert np.all(np.abs(after[4:] - before[4:]) > 1e-3)
    np.testing.assert_array_equal(np.array(model.bias[...]), np.ones(2))


def test_train_state_splits_and_merges_model_and_optimizer():
    state = TrainState.create(_Tiny(), make_tx(_section(warmup_steps=0), 10))
    assert state.step == 0
    model, optimizer = state.merge()
    optimizer.update(model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)))
    state = TrainState(state.graphdef, nnx.state((model, optimizer)), state.wrt)
    assert state.step == 1
    assert not np.allclose(np.array(state.model().embed[...]), 1.0)


def test_frozen_lm_trains_only_new_vocabulary_rows_of_a_causal_lm():
    from sidjax.model.config import preset
    from sidjax.model.transformer import CausalLM
    from sidjax.train.sft import make_train_step

    config = preset("tiny", 48).replace(tie_word_embeddings=False, num_layers=1)
    model = nnx.jit(lambda: CausalLM(config, rngs=nnx.Rngs(0)))()
    before = {k: np.array(v[...]) for k, v in nnx.to_flat_state(nnx.state(model))}
    wrt, scale = frozen_lm(model, first_new_row=40)
    state = make_train_state(model, _section(warmup_steps=0, weight_decay=0.1), 4, wrt=wrt, update_scale=scale)
    moments = {path[-1] for path, _ in nnx.to_flat_state(state.arrays[1]) if "mu" in path}
    assert moments == {"embed", "lm_head"}, "only the vocabulary tables get optimizer state"
    tokens = np.tile(np.arange(40, 48, dtype=np.int32), (4, 2))
    batch = {"tokens": tokens, "attention_mask": np.ones_like(tokens, bool), "loss_mask": np.ones_like(tokens, bool),
             "example_mask": np.ones(4, bool)}
    arrays, _ = make_train_step(state)(state.arrays, jax.tree.map(jnp.asarray, batch))
    after = {k: np.array(v[...]) for k, v in nnx.to_flat_state(arrays[0])}
    for path, value in before.items():
        if path == ("embed",):
            np.testing.assert_array_equal(after[path][:40], value[:40])
            assert np.all(np.any(after[path][40:] != value[40:], axis=1))
        elif path == ("lm_head",):
            np.testing.assert_array_equal(after[path][:, :40], value[:, :40])
            assert np.all(np.any(after[path][:, 40:] != value[:, 40:], axis=0))
        else:
            np.testing.assert_array_equal(after[path], value, err_msg=str(path))
