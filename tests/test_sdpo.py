"""S-DPO: equals DPO at M = 1, matches its formula for M > 1, and pushes the chosen SID up."""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.configs import base_config
from sidjax.model.config import ModelConfig
from sidjax.model.transformer import CausalLM
from sidjax.train import sdpo
from sidjax.train.grpo import Rollout, score
from sidjax.train.state import make_train_state
from sidjax.utils.settings import settings_from


def test_sdpo_equals_dpo_when_one_negative():
    chosen = jnp.asarray([0.3, -1.2, 2.0])
    rejected = jnp.asarray([[0.1], [0.5], [-3.0]])
    beta = 0.7
    got, _ = sdpo.sdpo_loss(chosen, rejected, beta)
    dpo = np.mean([-math.log(1 / (1 + math.exp(-beta * (c - r[0])))) for c, r in zip(chosen.tolist(), rejected.tolist())])
    np.testing.assert_allclose(got, dpo, rtol=1e-6)


def test_sdpo_matches_formula_with_many_negatives():
    chosen = np.asarray([0.2, -0.4])
    rejected = np.asarray([[0.1, 0.9, -2.0], [0.0, -0.5, 0.3]])
    beta = 0.5
    got, metrics = sdpo.sdpo_loss(jnp.asarray(chosen), jnp.asarray(rejected), beta)
    inner = np.log(np.exp(beta * (rejected - chosen[:, None])).sum(1))
    expected = np.mean(-np.log(1 / (1 + np.exp(inner))))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 0.0)


def test_negative_samplers_never_return_the_target():
    rng = np.random.default_rng(0)
    targets = np.asarray([0, 5, 9])
    neg = sdpo.random_negatives(targets, 10, 4, rng)
    assert neg.shape == (3, 4) and (neg != targets[:, None]).all() and neg.max() < 10
    assert all(len(set(row)) == 4 for row in neg.tolist())
    beams = np.asarray([[3, 7, 1, 2], [7, 8, 9, 1]])
    np.testing.assert_array_equal(sdpo.hard_negatives(beams, np.asarray([7, 2]), 2), [[3, 1], [7, 8]])


def test_sdpo_step_raises_the_chosen_sid_over_negatives():
    config = ModelConfig(vocab_size=24, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                         intermediate_size=64)
    section = base_config().sdpo
    section.unlock()
    section.learning_rate = 3e-2
    section.negatives = 2
    state = make_train_state(CausalLM(config, rngs=nnx.Rngs(0)), section, total_steps=10)
    ref_params = jax.tree.map(jnp.copy, state.model_arrays())
    step = sdpo.make_sdpo_step(state.graphdef, state.wrt, settings_from(sdpo.SdpoSettings, section))
    responses = jnp.asarray([[[12, 17, 23], [12, 17, 22], [14, 16, 20]]])
    batch = sdpo.PreferenceBatch(jnp.asarray([[1, 2, 3]]), jnp.ones((1, 3), bool), responses,
                                 jnp.ones(responses.shape, bool))

    def logprobs(arrays):
        model = nnx.merge(state.graphdef, arrays)[0]
        rollout = Rollout(batch.prompts, batch.prompt_mask, responses[0], batch.response_mask[0])
        return np.asarray((score(model, rollout, 0).logprobs * rollout.completion_mask).sum(1))

    arrays = state.arrays
    before = logprobs(arrays)
    for _ in range(3):
        arrays, metrics = step(arrays, ref_params, batch)
    after = logprobs(arrays)
    # The first negative shares two tokens with the chosen SID, so compare margins, not raw log-probs.
    assert after[0] > before[0] + 0.5
    assert ((after[0] - after[1:]) > (before[0] - before[1:]) + 1.0).all(), (before, after)
    assert float(metrics["accuracy"]) == 1.0
