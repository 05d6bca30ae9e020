"""Reasoning mode's search from the thought's cache equals the search over the re-encoded text."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.decode.beam import TrieTables, beam_search
from sidjax.decode.sample import SamplingParams, generate, generate_with_caches, pad_prompts
from sidjax.decode.think import search_after_thoughts, think_and_search
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.sid.codes import SidTrie

LEVEL_SIZES = (4, 3, 5)
OFFSETS = (20, 24, 27)
VOCAB = 40
PAD = 0
ANSWER_PREFIX = (17, 18)
BUDGET = 6


def _params(close_id: int, num_samples: int = 1) -> SamplingParams:
    return SamplingParams(max_new_tokens=BUDGET, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                          no_repeat_ngram=0, stop_tokens=(close_id,), suppress_tokens=(), thought_end=-1,
                          num_samples=num_samples)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_search_after_a_cached_thought_equals_re_encoding_it(dtype):
    model = CausalLM(dataclasses.replace(preset("tiny", VOCAB), dtype=dtype), rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 20, n).tolist() for n in (3, 7, 5, 9, 4, 6)]
    tokens, mask = (jnp.asarray(a) for a in pad_prompts(prompts, bucket=4, pad_id=PAD))
    sids = np.stack([rng.integers(0, s, 30) for s in LEVEL_SIZES], axis=1)
    tables = TrieTables.from_trie(SidTrie.build(sids, LEVEL_SIZES), OFFSETS)
    # The closing token: one that some greedy thoughts write within the budget and others do not, so both
    # kinds of row (closed by the model, cut at the budget) are searched.
    free = generate(model, tokens, mask, _params(-1), rng=jax.random.key(0), pad_id=PAD)
    written = np.asarray(free.tokens)[:, 0]
    close_id = next(t for t in np.unique(written) if 0 < (written == t).any(axis=1).sum() < len(prompts))

    thought, found = think_and_search(model, tokens, mask, _params(int(close_id)), rng=jax.random.key(0), pad_id=PAD,
                                      cites=None, tables=tables, close_id=int(close_id), answer_prefix=ANSWER_PREFIX,
                                      num_beams=5, normalize="vocab")
    alone = generate(model, tokens, mask, _params(int(close_id)), rng=jax.random.key(0), pad_id=PAD)
    np.testing.assert_array_equal(thought.tokens, alone.tokens)
    np.testing.assert_array_equal(thought.lengths, alone.lengths)
    stopped = np.asarray(thought.stopped)[:, 0]
    assert stopped.any() and not stopped.all()

    continued = []
    for prompt, row, length in zip(prompts, np.asarray(thought.tokens)[:, 0], np.asarray(thought.lengths)[:, 0]):
        ids = row[:length].tolist()
        if ids[-1] != close_id:
            ids.append(int(close_id))
        continued.append(prompt + ids + list(ANSWER_PREFIX))
    expected = beam_search(model, *(jnp.asarray(a) for a in pad_prompts(continued, bucket=4, pad_id=PAD)), tables,
                           num_beams=5)
    np.testing.assert_array_equal(found.codes, expected.codes)
    np.testing.assert_array_equal(found.valid, expected.valid)
    tolerance = 1e-5 if dtype == "float32" else 3e-2  # the same sums, in another order
    np.testing.assert_allclose(found.scores, expected.scores, rtol=tolerance, atol=tolerance)


def test_the_search_after_sampled_rollouts_reads_each_thought_up_to_its_close():
    """A GRPO rollout's rows (several per prompt) go on past `</think>` with their answer: the search after
    each one equals the search over prompt + thought + `</think>` + answer prefix, re-encoded."""
    model = CausalLM(preset("tiny", VOCAB), rngs=nnx.Rngs(3))
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 20, n).tolist() for n in (3, 7, 5)]
    tokens, mask = (jnp.asarray(a) for a in pad_prompts(prompts, bucket=4, pad_id=PAD))
    sids = np.stack([rng.integers(0, s, 30) for s in LEVEL_SIZES], axis=1)
    tables = TrieTables.from_trie(SidTrie.build(sids, LEVEL_SIZES), OFFSETS)
    samples = 4
    free = dataclasses.replace(_params(-1, samples), stop_tokens=(), temperature=1.0)
    written = generate(model, tokens, mask, free, rng=jax.random.key(2), pad_id=PAD).tokens
    written = np.asarray(written).reshape(-1, BUDGET)
    # A closing token that some rows write before their last token (an answer follows it) and others never.
    close_id = next(t for t in np.unique(written)
                    if 0 < (written[:, :-1] == t).any(axis=1).sum() and (written != t).all(axis=1).any())
    params = dataclasses.replace(free, thought_end=int(close_id))

    @jax.jit
    def rollout(tokens, mask):
        out, prompt_cache, cache = generate_with_caches(model, tokens, mask, jax.random.key(2), params, PAD, None)
        return out, search_after_thoughts(model, mask, prompt_cache, out, cache, tables, int(close_id), PAD,
                                          ANSWER_PREFIX, 5, "vocab")

    out, found = rollout(tokens, mask)
    rows = np.asarray(out.tokens).reshape(-1, BUDGET)
    np.testing.assert_array_equal(rows, written)
    continued = []
    for r, row in enumerate(rows.tolist()):
        thought = row[:row.index(close_id)] if close_id in row else row
        continued.append(prompts[r // samples] + thought + [int(close_id), *ANSWER_PREFIX])
    expected = beam_search(model, *(jnp.asarray(a) for a in pad_prompts(continued, bucket=4, pad_id=PAD)), tables,
                           num_beams=5)
    np.testing.assert_array_equal(found.codes, expected.codes)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5, atol=1e-5)


def test_think_and_search_refuses_what_it_cannot_continue():
    model = CausalLM(preset("tiny", VOCAB), rngs=nnx.Rngs(3))
    tokens, mask = (jnp.asarray(a) for a in pad_prompts([[1, 2, 3]], bucket=4, pad_id=PAD))
    tables = TrieTables.from_trie(SidTrie.build(np.zeros((1, 3), np.int64), LEVEL_SIZES), OFFSETS)
    common = dict(rng=jax.random.key(0), pad_id=PAD, cites=None, tables=tables, answer_prefix=ANSWER_PREFIX,
                  num_beams=2, normalize="vocab")
    with pytest.raises(ValueError, match="one thought per prompt"):
        think_and_search(model, tokens, mask, _params(5, num_samples=2), close_id=5, **common)
    with pytest.raises(ValueError, match="stop at its closing token 6"):
        think_and_search(model, tokens, mask, _params(5), close_id=6, **common)
