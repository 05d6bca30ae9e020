"""Constrained beam search: equals exhaustive scoring of every SID on a tiny random model; outputs are real SIDs."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.decode.beam import TrieTables, beam_search
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.sid.codes import SidTrie

LEVEL_SIZES = (4, 3, 5)
OFFSETS = (20, 24, 27)
VOCAB = 40


@nnx.jit
def _forward(model, tokens, positions):
    return model(tokens, positions)[0]


@pytest.fixture(scope="module")
def model():
    return CausalLM(preset("tiny", VOCAB), rngs=nnx.Rngs(1))


def _trie(num_items, seed):
    rng = np.random.default_rng(seed)
    sids = np.stack([rng.integers(0, s, num_items) for s in LEVEL_SIZES], axis=1)
    return SidTrie.build(sids, LEVEL_SIZES)


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    width = max(lengths)
    tokens = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), bool)
    rows = []
    for i, n in enumerate(lengths):
        row = rng.integers(0, 20, n)
        tokens[i, width - n:] = row
        mask[i, width - n:] = True
        rows.append(row)
    return rows, jnp.asarray(tokens), jnp.asarray(mask)


def _exhaustive(model, prompt, trie, normalize):
    """Score every distinct SID after the (unpadded) prompt with one full forward pass each."""
    sid_tokens = trie.leaf_sids + np.asarray(OFFSETS)
    seqs = np.concatenate([np.broadcast_to(prompt, (len(sid_tokens), len(prompt))), sid_tokens], axis=1)
    positions = np.broadcast_to(np.arange(seqs.shape[1]), seqs.shape)
    logits = np.asarray(_forward(model, jnp.asarray(seqs), jnp.asarray(positions)), np.float64)
    total = np.zeros(len(sid_tokens))
    for level in range(len(LEVEL_SIZES)):
        step = logits[:, len(prompt) - 1 + level]
        if normalize == "level":
            step = step[:, OFFSETS[level]:OFFSETS[level] + LEVEL_SIZES[level]]
            target = trie.leaf_sids[:, level]
        else:
            target = sid_tokens[:, level]
        logp = step - np.log(np.exp(step - step.max(-1, keepdims=True)).sum(-1, keepdims=True)) - step.max(-1, keepdims=True)
        total += logp[np.arange(len(total)), target]
    return total


@pytest.mark.parametrize("normalize", ["vocab", "level"])
def test_top_beams_equal_exhaustive_reference(model, normalize):
    trie = _trie(40, seed=3)
    # 16 beams >= every level-2 prefix count (4 x 3), so beam search is exact here;
    # 16 > 4 first-level codes exercises the padded first step.
    beams = 16
    rows, tokens, mask = _prompts([7, 3, 5])
    result = beam_search(model, tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=beams, normalize=normalize)
    leaves, scores = np.asarray(result.leaves), np.asarray(result.scores)
    assert np.asarray(result.valid).all()
    for i, prompt in enumerate(rows):
        reference = _exhaustive(model, prompt, trie, normalize)
        order = np.argsort(-reference, kind="stable")[:beams]
        np.testing.assert_array_equal(leaves[i], order)
        np.testing.assert_allclose(scores[i], reference[order], atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(np.asarray(result.codes)[i], trie.leaf_sids[order])


@pytest.mark.parametrize("normalize", ["vocab", "level"])
def test_ensemble_scores_are_the_members_mean(model, normalize):
    other = CausalLM(preset("tiny", VOCAB), rngs=nnx.Rngs(2))
    trie = _trie(40, seed=3)
    rows, tokens, mask = _prompts([6, 4], seed=4)
    result = beam_search((model, other), tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=16,
                         normalize=normalize)
    for i, prompt in enumerate(rows):
        reference = (_exhaustive(model, prompt, trie, normalize) + _exhaustive(other, prompt, trie, normalize)) / 2
        order = np.argsort(-reference, kind="stable")[:16]
        np.testing.assert_array_equal(np.asarray(result.leaves)[i], order)
        np.testing.assert_allclose(np.asarray(result.scores)[i], reference[order], atol=1e-4, rtol=1e-4)
    single = beam_search(model, tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=16, normalize=normalize)
    assert not np.array_equal(np.asarray(single.leaves), np.asarray(result.leaves))


def test_ensemble_members_must_share_a_vocabulary(model):
    trie = _trie(10, seed=1)
    _, tokens, mask = _prompts([3])
    bigger = CausalLM(preset("tiny", VOCAB + 8), rngs=nnx.Rngs(3))
    with pytest.raises(ValueError, match="vocab sizes"):
        beam_search((model, bigger), tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=2)


def test_more_beams_than_sids_returns_every_sid_once(model):
    trie = _trie(5, seed=7)
    rows, tokens, mask = _prompts([4, 6], seed=1)
    result = beam_search(model, tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=12)
    valid = np.asarray(result.valid)
    for i, prompt in enumerate(rows):
        n = trie.num_leaves
        assert valid[i, :n].all() and not valid[i, n:].any()
        assert sorted(np.asarray(result.leaves)[i, :n].tolist()) == list(range(n))
        assert (np.asarray(result.leaves)[i, n:] == -1).all()
        assert np.isneginf(np.asarray(result.scores)[i, n:]).all()
        reference = _exhaustive(model, prompt, trie, "vocab")
        np.testing.assert_array_equal(np.asarray(result.leaves)[i, :n], np.argsort(-reference, kind="stable"))


def test_pruned_search_returns_distinct_real_sids(model):
    trie = _trie(60, seed=5)
    _, tokens, mask = _prompts([5, 5, 2, 8], seed=2)
    result = beam_search(model, tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=6)
    leaves, codes = np.asarray(result.leaves), np.asarray(result.codes)
    assert np.asarray(result.valid).all()
    for i in range(leaves.shape[0]):
        assert len(set(leaves[i].tolist())) == 6
        np.testing.assert_array_equal(codes[i], trie.leaf_sids[leaves[i]])
        assert (np.diff(np.asarray(result.scores)[i]) <= 1e-6).all()


def test_bad_arguments_raise(model):
    trie = _trie(10, seed=1)
    _, tokens, mask = _prompts([3])
    with pytest.raises(ValueError, match="normalize"):
        beam_search(model, tokens, mask, TrieTables.from_trie(trie, OFFSETS), num_beams=2, normalize="full")
    with pytest.raises(ValueError, match="level_offsets"):
        TrieTables.from_trie(trie, OFFSETS[:2])
