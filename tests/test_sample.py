"""Sampler: greedy and log-probs equal a step-by-step full forward; the filtered distributions equal numpy's;
the repetition penalty and the n-gram ban equal transformers'."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor
from flax import nnx

from sidjax.decode.sample import (SamplingParams, generate, pad_prompts, penalize_repeats, repeated_ngram_bans,
                                  sample_logits)
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM

VOCAB = 50
PAD = 0


@nnx.jit
def _forward(model, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model(tokens, positions)[0]


@pytest.fixture(scope="module")
def model():
    return CausalLM(preset("tiny", VOCAB), rngs=nnx.Rngs(2))


def greedy_params(**changes) -> SamplingParams:
    """Greedy decoding of 6 tokens with nothing else on, then `changes` (sampling settings too)."""
    values = dict(max_new_tokens=6, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                  no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    values.update(changes)
    return SamplingParams(**values)


def _teacher_forced_logits(model, prompt, continuation):
    """Logits [steps, V] of one unpadded full forward pass over prompt + continuation."""
    logits = np.asarray(_forward(model, jnp.asarray([list(prompt) + list(continuation)])), np.float64)[0]
    return logits[len(prompt) - 1: -1]


def _teacher_forced(model, prompt, continuation):
    """Log-probs [steps, V] of one unpadded full forward pass over prompt + continuation."""
    steps = _teacher_forced_logits(model, prompt, continuation)
    steps = steps - steps.max(-1, keepdims=True)
    return steps - np.log(np.exp(steps).sum(-1, keepdims=True))


PROMPTS = [[5, 9, 3, 7, 1], [11, 2], [4, 4, 8]]


def test_greedy_matches_full_forward_with_left_padding(model):
    tokens, mask = pad_prompts(PROMPTS, bucket=4, pad_id=PAD)
    assert tokens.shape == (3, 8) and mask.sum() == 10
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(), rng=jax.random.key(0), pad_id=PAD)
    assert out.tokens.shape == (3, 1, 6)
    for i, prompt in enumerate(PROMPTS):
        row = np.asarray(out.tokens)[i, 0]
        logp = _teacher_forced(model, prompt, row)
        np.testing.assert_array_equal(row, logp.argmax(-1))
        np.testing.assert_allclose(np.asarray(out.logprobs)[i, 0], logp[np.arange(6), row], atol=1e-4)
    assert (np.asarray(out.lengths) == 6).all() and not np.asarray(out.stopped).any()


def test_stop_token_ends_a_row_and_pads_the_rest(model):
    tokens, mask = pad_prompts(PROMPTS[:1], bucket=1, pad_id=PAD)
    free = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(), rng=jax.random.key(0), pad_id=PAD)
    ref_tokens = np.asarray(free.tokens)[0, 0].tolist()
    stop = ref_tokens[2]
    first = ref_tokens.index(stop)
    tokens, mask = pad_prompts(PROMPTS[:1], bucket=1, pad_id=PAD)
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(stop_tokens=(stop,)),
                   rng=jax.random.key(0), pad_id=PAD)
    row = np.asarray(out.tokens)[0, 0]
    assert row[: first + 1].tolist() == ref_tokens[: first + 1]
    assert (row[first + 1:] == PAD).all()
    assert int(out.lengths[0, 0]) == first + 1 and bool(out.stopped[0, 0])
    assert (np.asarray(out.logprobs)[0, 0, first + 1:] == 0).all()


def test_samples_are_deterministic_per_rng_and_differ_within_a_group(model):
    tokens, mask = pad_prompts(PROMPTS, bucket=8, pad_id=PAD)
    params = greedy_params(temperature=1.5, num_samples=4, max_new_tokens=8)
    a = generate(model, jnp.asarray(tokens), jnp.asarray(mask), params, rng=jax.random.key(3), pad_id=PAD)
    b = generate(model, jnp.asarray(tokens), jnp.asarray(mask), params, rng=jax.random.key(3), pad_id=PAD)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.tokens.shape == (3, 4, 8)
    assert len({tuple(r) for r in np.asarray(a.tokens)[0].tolist()}) > 1
    # Each sampled row's log-probs are the model's own (temperature 1) log-probs of its tokens.
    row = np.asarray(a.tokens)[1, 2]
    logp = _teacher_forced(model, PROMPTS[1], row)
    np.testing.assert_allclose(np.asarray(a.logprobs)[1, 2], logp[np.arange(8), row], atol=1e-4)


def _numpy_filtered(logits, temperature, top_k, top_p):
    z = logits / temperature
    if top_k:
        z = np.where(z < np.sort(z)[-top_k], -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]
        keep = np.zeros_like(p, bool)
        keep[order[before < top_p]] = True
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    return p


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.6), (1.0, 4, 0.8)])
def test_sampling_distribution_matches_numpy(temperature, top_k, top_p):
    logits = np.asarray([1.0, 0.2, -0.5, 2.0, 0.0, 1.5, -2.0], np.float32)
    draws = 40000
    params = greedy_params(temperature=temperature, top_k=top_k, top_p=top_p)
    tokens = jax.jit(lambda k: sample_logits(jnp.broadcast_to(logits, (draws, 7)), k, params))(jax.random.key(0))
    freq = np.bincount(np.asarray(tokens), minlength=7) / draws
    expected = _numpy_filtered(logits.astype(np.float64), temperature, top_k, top_p)
    np.testing.assert_allclose(freq, expected, atol=0.01)
    assert (freq[expected == 0] == 0).all()


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="top_p"):
        greedy_params(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        greedy_params(temperature=-1.0)
    with pytest.raises(ValueError, match="repetition_penalty"):
        greedy_params(repetition_penalty=0.0)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        greedy_params(no_repeat_ngram=-1)
    with pytest.raises(ValueError, match="empty"):
        pad_prompts([[1], []], bucket=4, pad_id=PAD)


def test_sampling_draws_only_allowed_tokens_across_blocks():
    """Few allowed tokens spread over the CDF's blocks (first, block edges, last): their frequencies, nothing else."""
    vocab, draws = 1000, 30000
    allowed = np.asarray([0, 31, 32, 500, 999])
    probs = np.asarray([0.1, 0.2, 0.3, 0.15, 0.25])
    logits = np.full((vocab,), -np.inf, np.float32)
    logits[allowed] = np.log(probs)
    params = greedy_params(temperature=1.0, top_k=0, top_p=1.0)
    tokens = jax.jit(lambda k: sample_logits(jnp.broadcast_to(logits, (draws, vocab)), k, params))(jax.random.key(1))
    freq = np.bincount(np.asarray(tokens), minlength=vocab) / draws
    assert set(np.flatnonzero(freq)) == set(allowed)
    np.testing.assert_allclose(freq[allowed], probs, atol=0.01)


def _hf_penalized(logits, ids, penalty):
    processor = RepetitionPenaltyLogitsProcessor(penalty)
    return processor(torch.as_tensor([ids]), torch.as_tensor(logits[None], dtype=torch.float32)).numpy()[0]


def test_repetition_penalty_matches_transformers():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, VOCAB)).astype(np.float32)
    ids = [[3, 3, 7, 12, 49], [0, 25]]
    seen = np.zeros((2, VOCAB), bool)
    for row, row_ids in enumerate(ids):
        seen[row, row_ids] = True
    ours = np.asarray(penalize_repeats(jnp.asarray(logits), jnp.asarray(seen), 1.7))
    for row, row_ids in enumerate(ids):
        np.testing.assert_allclose(ours[row], _hf_penalized(logits[row], row_ids, 1.7), rtol=1e-6)


def test_greedy_with_repetition_penalty_matches_transformers_step_by_step(model):
    """Each token is the argmax of transformers' penalized scores over prompt + tokens so far (padding not seen);
    the log-probs stay the model's own."""
    penalty = 3.0
    tokens, mask = pad_prompts(PROMPTS, bucket=8, pad_id=PAD)
    params = greedy_params(repetition_penalty=penalty, max_new_tokens=8)
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), params, rng=jax.random.key(0), pad_id=PAD)
    plain = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(max_new_tokens=8),
                     rng=jax.random.key(0), pad_id=PAD)
    assert not np.array_equal(out.tokens, plain.tokens)  # the penalty changes what a tiny model repeats
    for i, prompt in enumerate(PROMPTS):
        row = np.asarray(out.tokens)[i, 0].tolist()
        logits = _teacher_forced_logits(model, prompt, row).astype(np.float32)
        for step in range(len(row)):
            expected = _hf_penalized(logits[step], list(prompt) + row[:step], penalty).argmax()
            assert row[step] == expected, (i, step)
        logp = _teacher_forced(model, prompt, row)
        np.testing.assert_allclose(np.asarray(out.logprobs)[i, 0], logp[np.arange(8), row], atol=1e-4)


def _hf_bans(generated, n):
    """The tokens transformers' no_repeat_ngram_size bans after `generated` (its input ids)."""
    scores = torch.zeros((1, VOCAB))
    banned = NoRepeatNGramLogitsProcessor(n)(torch.as_tensor([generated]), scores)
    return set(np.flatnonzero(np.isinf(banned.numpy()[0])).tolist())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_bans_match_transformers_on_the_continuation(n):
    """At every step of a repetitive buffer, the bans equal transformers' processor run on the tokens so far."""
    rng = np.random.default_rng(n)
    buffer = rng.integers(0, 4, size=(3, 12)).astype(np.int32)  # 4 symbols: many repeated n-grams
    for step in range(buffer.shape[1]):
        ours = np.asarray(repeated_ngram_bans(jnp.asarray(buffer), jnp.asarray(step), n, VOCAB))
        for row in range(buffer.shape[0]):
            expected = _hf_bans(buffer[row, :step].tolist(), n) if step else set()
            assert set(np.flatnonzero(ours[row]).tolist()) == expected, (n, step, row)


def test_greedy_with_ngram_ban_never_repeats_and_is_otherwise_greedy(model):
    """Each token is the argmax of the model's logits with transformers' bans over the continuation so far;
    no bigram repeats within a row, while prompt bigrams stay allowed; the log-probs stay the model's own."""
    prompts = [[5, 9, 5, 9, 5], [11, 2], [4, 4, 8]]
    tokens, mask = pad_prompts(prompts, bucket=8, pad_id=PAD)
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(no_repeat_ngram=2, max_new_tokens=12),
                   rng=jax.random.key(0), pad_id=PAD)
    plain = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(max_new_tokens=12),
                     rng=jax.random.key(0), pad_id=PAD)
    assert not np.array_equal(out.tokens, plain.tokens)  # a tiny greedy model loops; the ban breaks it
    for i, prompt in enumerate(prompts):
        row = np.asarray(out.tokens)[i, 0].tolist()
        bigrams = list(zip(row, row[1:]))
        assert len(set(bigrams)) == len(bigrams), (i, row)
        logits = _teacher_forced_logits(model, prompt, row)
        for step in range(len(row)):
            allowed = logits[step].copy()
            allowed[list(_hf_bans(row[:step], 2) if step else [])] = -np.inf
            assert row[step] == allowed.argmax(), (i, step)
        logp = _teacher_forced(model, prompt, row)
        np.testing.assert_allclose(np.asarray(out.logprobs)[i, 0], logp[np.arange(12), row], atol=1e-4)


def test_suppressed_tokens_are_never_generated(model):
    """A tiny greedy model repeats its prompt's last token; suppressed, it writes the next best token instead."""
    tokens, mask = pad_prompts(PROMPTS, bucket=8, pad_id=PAD)
    plain = np.asarray(generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(), rng=jax.random.key(0),
                                pad_id=PAD).tokens)
    suppressed = tuple(sorted(set(plain[:, 0, 0].tolist())))
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), greedy_params(suppress_tokens=suppressed),
                   rng=jax.random.key(0), pad_id=PAD)
    assert not set(np.asarray(out.tokens).ravel().tolist()) & set(suppressed)
    for i, prompt in enumerate(PROMPTS):
        row = np.asarray(out.tokens)[i, 0].tolist()
        logits = _teacher_forced_logits(model, prompt, row)
        logits[:, list(suppressed)] = -np.inf
        assert row == logits.argmax(-1).tolist(), i
