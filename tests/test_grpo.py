"""GRPO: the loss against a plain-numpy reference, prefix-shared scoring against full sequences, and a toy
problem where the rewarded SID gains probability."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.configs import base_config
from sidjax.model.config import ModelConfig
from sidjax.model.transformer import CausalLM, positions_from_mask
from sidjax.sid.codes import SidTrie
from sidjax.train import grpo
from sidjax.train import rewards as R
from sidjax.train.losses import TokenScores, token_logprobs
from sidjax.decode import citations
from sidjax.decode.beam import TrieTables
from sidjax.decode.sample import SamplingParams
from sidjax.train.state import make_train_state
from sidjax.utils.settings import settings_from


def reference_loss(lp, old, ref, adv, mask, lo, hi, beta, how):
    ratio = np.exp(lp - old)
    obj = np.minimum(ratio * adv[:, None], np.clip(ratio, 1 - lo, 1 + hi) * adv[:, None])
    d = ref - lp
    per_token = -obj + beta * (np.exp(d) - d - 1)
    if how == "token_mean":
        return (per_token * mask).sum() / mask.sum()
    return np.mean((per_token * mask).sum(1) / mask.sum(1))


@pytest.mark.parametrize("how", ["token_mean", "sequence_mean"])
def test_policy_loss_matches_numpy(how):
    rng = np.random.default_rng(0)
    lp, old, ref = (rng.normal(-1.0, 0.4, (3, 5)).astype(np.float32) for _ in range(3))
    adv = np.asarray([1.5, -0.7, 0.2], np.float32)
    mask = np.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], np.float32)
    got, metrics = grpo.policy_loss(
        jnp.asarray(lp), jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask),
        clip_eps_low=0.2, clip_eps_high=0.28, kl_beta=0.05, aggregation=how,
    )
    np.testing.assert_allclose(got, reference_loss(lp, old, ref, adv, mask, 0.2, 0.28, 0.05, how), rtol=1e-5)
    ratio = np.exp(lp - old)
    clipped = ((ratio < 0.8) & (adv[:, None] < 0)) | ((ratio > 1.28) & (adv[:, None] > 0))
    np.testing.assert_allclose(metrics["clip_fraction"], (clipped * mask).sum() / mask.sum(), rtol=1e-6)
    assert float(metrics["kl"]) >= 0.0


def test_kl_is_zero_against_itself_and_ratio_one_gives_advantage_weighted_loss():
    lp = jnp.asarray([[-1.0, -2.0]])
    loss, metrics = grpo.policy_loss(lp, lp, lp, jnp.asarray([2.0]), jnp.ones((1, 2)), clip_eps_low=0.2,
                                     clip_eps_high=0.2, kl_beta=1.0, aggregation="token_mean")
    assert float(metrics["kl"]) == 0.0
    np.testing.assert_allclose(loss, -2.0)


def full_sequence_score(model, rollout, chunk_size, with_entropy=False):
    """The reference: every row is its prompt + completion run as one sequence (the prompt encoded G times)."""
    group = rollout.completion.shape[0] // rollout.prompts.shape[0]
    prompts = jnp.repeat(rollout.prompts, group, axis=0)
    prompt_mask = jnp.repeat(rollout.prompt_mask, group, axis=0)
    tokens = jnp.concatenate([prompts, rollout.completion], axis=1)
    attention_mask = jnp.concatenate([prompt_mask, rollout.completion_mask], axis=1)
    scores = token_logprobs(model, tokens, positions_from_mask(attention_mask), attention_mask,
                            chunk_size=chunk_size, with_entropy=with_entropy)
    first = prompts.shape[1] - 1  # log-prob entry t scores token t + 1: the completion starts at entry P - 1
    return TokenScores(scores.logprobs[:, first:], None if scores.entropy is None else scores.entropy[:, first:])


def parity_model(remat="none"):
    config = ModelConfig(vocab_size=24, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                         intermediate_size=64, qk_norm=True, attention_bias=True, tie_word_embeddings=False,
                         remat=remat)
    model = CausalLM(config, rngs=nnx.Rngs(3))
    # Non-zero q/k/v biases, so padding positions would show if they leaked into real rows.
    biases = [b for layer in model.layers for b in (layer.attn.q_bias, layer.attn.k_bias, layer.attn.v_bias)]
    for i, bias in enumerate(biases):
        bias[...] = 0.3 * jax.random.normal(jax.random.key(i), bias.shape)
    return model


def parity_rollout():
    """3 prompts left-padded to 6 (6, 3 and 1 real tokens), 4 completions each right-padded to 4 (4..0 real)."""
    rng = np.random.default_rng(0)
    prompt_mask = np.arange(6)[None, :] >= np.asarray([[0], [3], [5]])
    prompts = np.where(prompt_mask, rng.integers(1, 24, (3, 6)), 0)
    lengths = np.asarray([4, 3, 1, 0, 2, 4, 1, 3, 0, 2, 4, 1])
    completion_mask = np.arange(4)[None, :] < lengths[:, None]
    completion = np.where(completion_mask, rng.integers(1, 24, (12, 4)), 0)
    return grpo.Rollout(jnp.asarray(prompts, jnp.int32), jnp.asarray(prompt_mask), jnp.asarray(completion, jnp.int32),
                        jnp.asarray(completion_mask))


@pytest.mark.parametrize("chunk_size", [0, 3])
def test_prefix_shared_score_equals_full_sequence_score(chunk_size):
    model, rollout = parity_model(), parity_rollout()
    got = grpo.score(model, rollout, chunk_size, with_entropy=True)
    want = full_sequence_score(model, rollout, 0, with_entropy=True)
    mask = np.asarray(rollout.completion_mask)
    assert got.logprobs.shape == rollout.completion.shape
    np.testing.assert_allclose(np.asarray(got.logprobs)[mask], np.asarray(want.logprobs)[mask], atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.entropy)[mask], np.asarray(want.entropy)[mask], atol=1e-5)


def test_grpo_step_with_prefix_shared_scores_equals_full_sequence_scoring(monkeypatch):
    section = base_config().grpo
    section.unlock()
    section.group_size = 4
    section.updates_per_batch = 2  # old-policy log-probs too, and a second update with ratio != 1
    section.kl_beta = 0.1
    section.reward_weights = {"exact": 1.0, "prefix": 1.0}
    section.learning_rate = 1e-2
    section.adam_eps = 1.0  # updates proportional to the gradients, so parameters compare the numerics
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=None)
    fixed = parity_rollout()
    inputs = grpo.StepInputs(fixed.prompts, fixed.prompt_mask, jnp.asarray(SIDS[[0, 1, 3]]), jax.random.key(0))
    tables = TrieTables.from_trie(SidTrie.build(SIDS, (4, 4, 4)), OFFSETS)
    sids = jnp.asarray(np.tile(SIDS + OFFSETS, (3, 1)), jnp.int32)
    completion = jnp.concatenate([sids, jnp.zeros((12, 1), jnp.int32)], axis=1)

    def rollout_fn(model, inputs, tables):
        return grpo.Completions(jnp.where(fixed.completion_mask, completion, 0), fixed.completion_mask)

    def run():
        state = make_train_state(parity_model(remat="full"), section, total_steps=10)
        ref_params = jax.tree.map(lambda x: x + 0.01, state.model_arrays())  # a reference that differs: KL > 0
        step = grpo.make_grpo_step(state.graphdef, state.wrt, rollout_fn, settings)
        start = [np.asarray(x) for x in jax.tree.leaves(state.arrays[0])]
        arrays, metrics = step(state.arrays, ref_params, inputs, tables)
        return start, [np.asarray(x) for x in jax.tree.leaves(arrays[0])], jax.device_get(metrics)

    start, shared, shared_metrics = run()
    monkeypatch.setattr(grpo, "score", full_sequence_score)
    _, full, full_metrics = run()
    assert max(float(np.abs(a - b).max()) for a, b in zip(start, shared)) > 1e-4, "the step must move parameters"
    assert shared_metrics["informative_groups"] > 0 and shared_metrics["kl"] > 0
    for name in ("loss", "kl", "entropy", "clip_fraction"):
        np.testing.assert_allclose(shared_metrics[name], full_metrics[name], atol=1e-5, err_msg=name)
    assert max(float(np.abs(a - b).max()) for a, b in zip(shared, full)) < 1e-5


# Toy: text tokens 0..11, 3 SID levels of 4 codes at 12/16/20; four items; the target is item 1.
OFFSETS = np.asarray([12, 16, 20])
SIDS = np.asarray([[0, 1, 2], [0, 1, 3], [1, 0, 0], [2, 3, 1]])
TARGET = 1


def toy_state(learning_rate):
    config = ModelConfig(vocab_size=24, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                         intermediate_size=64)
    model = CausalLM(config, rngs=nnx.Rngs(0))
    section = base_config().grpo
    section.unlock()
    section.learning_rate = learning_rate
    return make_train_state(model, section, total_steps=10)


def catalogue_rollout(model, inputs, tables):
    """A fixed group: every item's SID once, like G = 4 beams covering the whole catalogue."""
    group = jnp.asarray(SIDS + OFFSETS, jnp.int32)
    completion = jnp.tile(group, (inputs.prompts.shape[0], 1))
    return grpo.Completions(completion, jnp.ones_like(completion, bool))


def test_rewarded_sid_gains_probability():
    # GREAM's estimator with two updates per rollout batch (cached old log-probs, ratio != 1 on the second).
    section = base_config().grpo
    section.unlock()
    section.group_size = 4
    section.advantage = "pass_at_k"
    section.pass_k = 2
    section.updates_per_batch = 2
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=None)
    state = toy_state(learning_rate=3e-2)
    ref_params = jax.tree.map(jnp.copy, state.model_arrays())
    step = grpo.make_grpo_step(state.graphdef, state.wrt, catalogue_rollout, settings)
    inputs = toy_inputs()
    tables = TrieTables.from_trie(SidTrie.build(SIDS, (4, 4, 4)), OFFSETS)

    def target_logprob(arrays):
        model = nnx.merge(state.graphdef, arrays)[0]
        completion, mask, _ = catalogue_rollout(model, inputs, None)
        rollout = grpo.Rollout(inputs.prompts, inputs.prompt_mask, completion, mask)
        lp = grpo.score(model, rollout, 0).logprobs
        per_completion = (lp * rollout.completion_mask).sum(axis=1).reshape(2, 4)
        return np.asarray(per_completion[:, TARGET])

    arrays = state.arrays
    before = target_logprob(arrays)
    for _ in range(4):
        arrays, metrics = step(arrays, ref_params, inputs, tables)
    after = target_logprob(arrays)
    assert (after > before + 0.5).all(), (before, after)
    np.testing.assert_allclose(metrics["hit_rate"], 0.25)
    np.testing.assert_allclose(metrics["informative_groups"], 1.0)
    np.testing.assert_allclose(metrics["response_length"], 3.0)
    assert float(metrics["kl"]) > 0.0 and np.isfinite(float(metrics["entropy"]))


def toy_inputs():
    return grpo.StepInputs(
        prompts=jnp.asarray([[0, 1, 2, 3], [4, 5, 6, 7]]),
        prompt_mask=jnp.asarray([[False, True, True, True], [True, True, True, True]]),
        target_codes=jnp.asarray(SIDS[[TARGET, TARGET]]),
        rng=jax.random.key(0),
    )


def test_beam_rollout_step_ranks_the_target_up():
    section = base_config().grpo
    section.unlock()
    section.group_size = 4
    section.reward_weights = {"exact": 1.0, "rank": 1.0}
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=None)
    state = toy_state(learning_rate=3e-2)
    ref_params = jax.tree.map(jnp.copy, state.model_arrays())
    tables = TrieTables.from_trie(SidTrie.build(SIDS, (4, 4, 4)), OFFSETS)
    step = grpo.make_grpo_step(state.graphdef, state.wrt, grpo.beam_rollout(4), settings)
    inputs = toy_inputs()
    rollout = grpo.beam_rollout(4)
    first = rollout(nnx.merge(state.graphdef, state.arrays)[0], inputs, tables).tokens
    # Four beams over a four-item catalogue: every item exactly once per prompt.
    got = sorted(map(tuple, (np.asarray(first[:4]) - OFFSETS).tolist()))
    assert got == sorted(map(tuple, SIDS.tolist()))
    arrays = state.arrays
    for _ in range(4):
        arrays, metrics = step(arrays, ref_params, inputs, tables)
    completion = rollout(nnx.merge(state.graphdef, arrays)[0], inputs, tables).tokens
    top = np.asarray(completion).reshape(2, 4, 3)[:, 0] - OFFSETS
    np.testing.assert_array_equal(top, SIDS[[TARGET, TARGET]])
    np.testing.assert_allclose(metrics["hit_rate"], 0.25)
    # Another lineage (a new model, the same settings) gets the same jitted step: compiled once.
    other = toy_state(learning_rate=3e-2)
    assert grpo.make_grpo_step(other.graphdef, other.wrt, grpo.beam_rollout(4), settings) is step
    assert step._cache_size() == 1


def test_sample_rollout_step_runs_with_reasoning_format():
    section = base_config().grpo
    section.unlock()
    section.group_size = 3
    section.mode = "reasoning"
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=11)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                            no_repeat_ngram=0, stop_tokens=(10,), suppress_tokens=(), thought_end=-1, num_samples=3)
    state = toy_state(learning_rate=1e-3)
    ref_params = jax.tree.map(jnp.copy, state.model_arrays())
    tables = TrieTables.from_trie(SidTrie.build(SIDS, (4, 4, 4)), OFFSETS)
    step = grpo.make_grpo_step(state.graphdef, state.wrt, grpo.sample_rollout(params, pad_id=0), settings)
    arrays, metrics = step(state.arrays, ref_params, toy_inputs(), tables)
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert 1.0 <= metrics["response_length"] <= 6.0
    assert 0.0 <= metrics["well_formed"] <= 1.0
    assert metrics["well_formed"] <= metrics["think_closed"] <= 1.0  # a well-formed answer closed its thought


def test_reasoning_rollout_keeps_the_thought_grammar_and_frees_the_answer():
    """Sampled like the eval decodes: no end of turn inside the thought, and every SID the thought writes
    is one of its prompt's cited SIDs; after `</think>` any SID may be written (the reward judges it)."""
    stop, think_end, group = 10, 11, 8
    params = SamplingParams(max_new_tokens=16, temperature=2.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                            no_repeat_ngram=0, stop_tokens=(stop,), suppress_tokens=(stop,), thought_end=think_end,
                            num_samples=group)
    level = citations.token_levels(24, OFFSETS, (4, 4, 4))
    histories = [[0], [2, 3]]
    cites = citations.history_citations(SIDS, histories, OFFSETS, level, bucket=2)
    state = toy_state(learning_rate=1e-3)
    rollout = grpo.sample_rollout(params, pad_id=0, token_level=jnp.asarray(level))
    inputs = toy_inputs()._replace(cite_sids=jnp.asarray(cites.sids))
    completion, mask, searched = rollout(nnx.merge(state.graphdef, state.arrays)[0], inputs, None)
    assert searched is None
    completion, mask = np.asarray(completion), np.asarray(mask)
    closed = answered_freely = 0
    for row in range(completion.shape[0]):
        tokens = completion[row][mask[row]].tolist()
        thought = tokens[:tokens.index(think_end)] if think_end in tokens else tokens
        closed += think_end in tokens
        assert stop not in thought, tokens
        written = [t for t in thought if level[t] >= 0]
        paths = {tuple(SIDS[i] + OFFSETS) for i in histories[row // group]}
        whole = len(written) - len(written) % 3  # a thought cut by the budget may end inside a SID
        assert all(tuple(written[k:k + 3]) in paths for k in range(0, whole, 3)), (row, tokens)
        answer = tokens[len(thought) + 1:]
        answered_freely += any(level[t] >= 0 and t not in {c for p in paths for c in p} for t in answer)
    assert closed > 0 and answered_freely > 0


def test_the_search_reward_ranks_the_target_in_the_search_after_each_thought():
    """Reasoning-mode rollouts with the `search` reward: each row's reward is the eval's NDCG of the target
    among the beams searched after its thought, and a step trains on it."""
    think_end, group, beams = 11, 4, 3  # 3 of the catalogue's 4 items
    section = base_config().grpo
    section.unlock()
    section.group_size = group
    section.mode = "reasoning"
    section.rollout = "sample"
    section.reward_weights = {"prefix": 0.0, "search": 1.0}
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=think_end)
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                            no_repeat_ngram=0, stop_tokens=(10,), suppress_tokens=(10,), thought_end=think_end,
                            num_samples=group)
    search = grpo.ThoughtSearch(close_id=think_end, answer_prefix=(9,), num_beams=beams, normalize="vocab")
    state = toy_state(learning_rate=1e-3)
    model = nnx.merge(state.graphdef, state.arrays)[0]
    tables = TrieTables.from_trie(SidTrie.build(SIDS, (4, 4, 4)), OFFSETS)
    # The untrained model ranks item 0 third and item 1 fourth after these thoughts: the first prompt's target
    # is found (where its thought closed), the second's is not.
    inputs = toy_inputs()._replace(target_codes=jnp.asarray(SIDS[[0, TARGET]]))
    completions = jax.jit(grpo.sample_rollout(params, pad_id=0, search=search))(model, inputs, tables)
    assert completions.searched.shape == (2 * group, beams, 3)
    rewards = R.compute_rewards(completions.tokens, completions.mask, jnp.repeat(inputs.target_codes, group, axis=0),
                                searched=completions.searched, tables=tables, think_end_id=think_end,
                                group_size=group, weights={"search": 1.0}, prefix_credit=(0.25, 0.5),
                                real_item_bonus=0.1, gream_credit=(0.5,))
    tokens, mask = np.asarray(completions.tokens), np.asarray(completions.mask)
    targets = np.asarray(inputs.target_codes)
    for row, found in enumerate(np.asarray(completions.searched)):
        closed = think_end in tokens[row][mask[row]]
        ranks = [r for r, codes in enumerate(found.tolist()) if codes == targets[row // group].tolist()]
        want = 1.0 / math.log2(ranks[0] + 2) if ranks and closed else 0.0
        assert float(rewards.components["search"][row]) == pytest.approx(want), row
    credit = np.asarray(rewards.components["search"])
    assert credit.max() > 0 and (credit == 0).any(), credit
    step = grpo.make_grpo_step(state.graphdef, state.wrt, grpo.sample_rollout(params, pad_id=0, search=search),
                               settings)
    _, metrics = step(state.arrays, jax.tree.map(jnp.copy, state.model_arrays()), inputs, tables)
    assert 0.0 < float(metrics["reward/search"]) <= 1.0


def test_a_step_that_withholds_credit_from_copies_reads_the_prompts_history():
    section = base_config().grpo
    section.unlock()
    section.group_size = 4
    section.credit_copies = False
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=None)
    state = toy_state(learning_rate=1e-3)
    tables = TrieTables.from_trie(SidTrie.build(SIDS, (4, 4, 4)), OFFSETS)
    level = citations.token_levels(24, OFFSETS, (4, 4, 4))
    # Prompt 0 has bought item 0 (the target's category, two levels in common), prompt 1 nothing.
    cites = citations.history_citations(SIDS, [[0], [3]], OFFSETS, level, bucket=2)
    inputs = toy_inputs()._replace(cite_sids=jnp.asarray(cites.sids))
    step = grpo.make_grpo_step(state.graphdef, state.wrt, catalogue_rollout, settings)
    _, metrics = step(state.arrays, jax.tree.map(jnp.copy, state.model_arrays()), inputs, tables)
    # Each group is the whole catalogue: prefix credit .5 (item 0), 1 (the target), 0, 0, +.1 each; the copies
    # (item 0 in group 0, item 3 in group 1) lose their credit but not the real-item bonus.
    np.testing.assert_allclose(metrics["reward/prefix"], (0.1 + 1.1 + 0.1 + 0.1 + 0.6 + 1.1 + 0.1 + 0.1) / 8, atol=1e-6)


def test_sample_rollout_refuses_citations_without_their_table():
    params = SamplingParams(max_new_tokens=4, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                            no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=2)
    state = toy_state(learning_rate=1e-3)
    model = nnx.merge(state.graphdef, state.arrays)[0]
    level = jnp.asarray(citations.token_levels(24, OFFSETS, (4, 4, 4)))
    with pytest.raises(ValueError, match="cite_sids"):
        grpo.sample_rollout(params, pad_id=0, token_level=level)(model, toy_inputs(), None)
    with pytest.raises(ValueError, match="token_level"):
        grpo.sample_rollout(params, pad_id=0)(model, toy_inputs()._replace(cite_sids=jnp.zeros((2, 2, 3), jnp.int32)),
                                              None)


def test_rollout_metrics_count_closed_thoughts_in_reasoning_mode_only():
    completion = jnp.asarray([[1, 11, 5], [1, 2, 3], [11, 0, 0], [2, 2, 11]])
    mask = jnp.asarray([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 0]], bool)  # the last row's 11 is padding
    prompts = jnp.ones((4, 2), jnp.int32)
    rollout = grpo.Rollout(prompts, jnp.ones((4, 2), bool), completion, mask)
    rewards = R.Rewards(total=jnp.asarray([1.0, 0.0, 0.0, 0.5]),
                        components={name: jnp.zeros(4) for name in R.REWARD_COMPONENTS},
                        hit=jnp.asarray([True, False, False, False]), well_formed=jnp.asarray([True, False, False, True]))
    metrics = grpo.rollout_metrics(rewards, rollout, group_size=2, think_end_id=11)
    np.testing.assert_allclose(metrics["think_closed"], 0.5)
    np.testing.assert_allclose(metrics["response_length"], 2.25)
    np.testing.assert_allclose(metrics["informative_groups"], 1.0)
    assert "think_closed" not in grpo.rollout_metrics(rewards, rollout, group_size=2, think_end_id=None)
