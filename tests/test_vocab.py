"""SID tokens: contiguous id blocks per level, exact one-id encoding, mean-initialised resized rows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx

from sidjax.model import tokenizer as bpe, vocab
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.sid.codes import sid_token

LEVELS = [5, 3, 4]


def _tokenizer():
    return bpe.train_bpe(["red metal screw", "blue plastic cap", "a_1 b_2 <a <b_"] * 20, vocab_size=300)


def test_blocks_are_contiguous_and_encode_exactly():
    tok = _tokenizer()
    size = tok.get_vocab_size(with_added_tokens=True)
    offsets = vocab.add_sid_tokens(tok, LEVELS)
    np.testing.assert_array_equal(offsets, [size, size + 5, size + 8])
    for level, n in enumerate(LEVELS):
        for code in range(n):
            assert tok.token_to_id(sid_token(level, code)) == offsets[level] + code
    sids = np.array([[4, 2, 3], [0, 0, 0]])
    vocab.check_sid_tokens(tok, offsets, LEVELS, sids)
    assert tok.encode("x <a_4><b_2><c_3>").ids[-3:] == (offsets + sids[0]).tolist()
    # Idempotent on a tokenizer that already has the blocks (a reloaded checkpoint).
    np.testing.assert_array_equal(vocab.add_sid_tokens(tok, LEVELS), offsets)
    with pytest.raises(vocab.VocabularyError, match="missing"):
        vocab.level_offsets(tok, [6, 3, 4])


def test_check_fails_loudly_when_a_token_splits():
    tok = _tokenizer()
    offsets = vocab.add_sid_tokens(tok, LEVELS)
    vocab.check_sid_tokens(tokenizers.Tokenizer.from_str(tok.to_str()), offsets, LEVELS)  # survives saving
    without = _tokenizer()  # a tokenizer lacking the SID tokens splits them into pieces
    with pytest.raises(vocab.VocabularyError, match=r"do not encode.*<a_0> -> \["):
        vocab.check_sid_tokens(without, offsets, LEVELS)


def test_resize_mean_init_padding_and_new_rows_mask():
    config = preset("tiny", 100).replace(tie_word_embeddings=False)
    model = CausalLM(config, rngs=nnx.Rngs(0))
    resized = vocab.resize_vocab(model, num_tokens=140, first_new_row=90, multiple=128)
    assert resized.config.vocab_size == 256
    embed = np.asarray(resized.embed[...])
    old = np.asarray(model.embed[...])
    np.testing.assert_array_equal(embed[:90], old[:90])
    np.testing.assert_allclose(embed[90:], np.broadcast_to(old[:90].mean(0), (166, 64)), atol=1e-7)
    head = np.asarray(resized.lm_head[...])
    np.testing.assert_allclose(head[:, 200], np.asarray(model.lm_head[...])[:, :90].mean(1), atol=1e-7)
    np.testing.assert_array_equal(np.asarray(resized.layers[0].mlp.up_proj[...]),
                                  np.asarray(model.layers[0].mlp.up_proj[...]))
    logits, _ = nnx.jit(lambda m, t, p: m(t, p))(resized, jnp.zeros((1, 2), jnp.int32), jnp.arange(2)[None])
    assert logits.shape == (1, 2, 256)

    mask = vocab.new_rows_mask(resized, 90)
    np.testing.assert_array_equal(np.asarray(mask["embed"][...])[:, 0], np.arange(256) >= 90)
    np.testing.assert_array_equal(np.asarray(mask["lm_head"][...])[0], np.arange(256) >= 90)
    assert float(mask["final_norm"]["scale"][...]) == 0.0
    # Same tree as the params: an optimizer's updates can be multiplied by it leaf by leaf.
    masked = jax.tree.map(lambda p, m: p * m, nnx.state(resized, nnx.Param), mask)
    assert not np.asarray(masked["embed"][...])[:90].any() and np.asarray(masked["embed"][...])[90:].any()
    assert not np.asarray(masked["layers"][0]["mlp"]["up_proj"][...]).any()


def test_sampled_init_gives_distinct_new_rows_with_the_pretrained_rows_spread():
    config = preset("tiny", 100).replace(tie_word_embeddings=False)
    model = CausalLM(config, rngs=nnx.Rngs(0))
    old = np.asarray(model.embed[...])
    resized = vocab.resize_vocab(model, num_tokens=1100, first_new_row=90, multiple=128, sampled=True, seed=3)
    embed = np.asarray(resized.embed[...])
    np.testing.assert_array_equal(embed[:90], old[:90])
    new = embed[90:]
    assert len(np.unique(new.round(6), axis=0)) == len(new)  # mean init would give one row, repeated
    # 1,062 draws: their mean and spread per dimension are the pretrained rows' within sampling error.
    np.testing.assert_allclose(new.mean(0), old[:90].mean(0), atol=4 * old[:90].std(0).max() / np.sqrt(len(new)))
    np.testing.assert_allclose(new.std(0), old[:90].std(0), rtol=0.15)
    head = np.asarray(resized.lm_head[...])
    assert np.abs(head[:, 90:] - head[:, 90:].mean(1, keepdims=True)).max() > 0
    again = vocab.resize_vocab(model, num_tokens=1100, first_new_row=90, multiple=128, sampled=True, seed=3)
    np.testing.assert_array_equal(np.asarray(again.embed[...]), embed)
    other = vocab.resize_vocab(model, num_tokens=1100, first_new_row=90, multiple=128, sampled=True, seed=4)
    assert not np.array_equal(np.asarray(other.embed[...])[90:], new)


def test_title_rows_start_each_used_sid_token_from_its_items_titles():
    table = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]], np.float32)
    # centre (0, 0), mean distance 1.6; items: titles {1, 2}, {1}, {3, 3, 99 (not pretrained: ignored)}, {} (none)
    titles = vocab.ItemTitles(tokens=[np.array([1, 2]), np.array([1]), np.array([3, 3, 99]), np.array([], int)],
                              sids=np.array([[0, 1], [0, 0], [2, 0], [1, 1]]), level_offsets=np.array([10, 20]))
    rows, values = vocab.title_rows(table, titles)
    # item vectors (1, 1), (2, 0), (-2, 0): their mean (1/3, 1/3); level 0: code 0 <- items 0, 1: (1.5, .5),
    # 7/6, 1/6 from it; code 2 <- item 2: (-2, 0); code 1: no title. Level 1: code 0 <- items 1, 2: (0, 0);
    # code 1 <- item 0: (1, 1). Each row: the centre plus its direction from (1/3, 1/3), at distance 1.6.
    np.testing.assert_array_equal(rows, [10, 12, 20, 21])
    unit = lambda v: np.asarray(v, np.float32) / np.linalg.norm(v)  # noqa: E731
    np.testing.assert_allclose(values, 1.6 * np.stack([unit([7, 1]), unit([-7, -1]), unit([-1, -1]), unit([1, 1])]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="titles of 3 items but SIDs of 4"):
        vocab.ItemTitles(tokens=titles.tokens[:3], sids=titles.sids, level_offsets=titles.level_offsets)


def test_resize_with_titles_sets_the_sid_rows_of_embedding_and_untied_head():
    config = preset("tiny", 100).replace(tie_word_embeddings=False)
    model = CausalLM(config, rngs=nnx.Rngs(0))
    titles = vocab.ItemTitles(tokens=[np.array([5, 6]), np.array([7])], sids=np.array([[0, 1], [1, 1]]),
                              level_offsets=np.array([90, 92]))
    resized = vocab.resize_vocab(model, num_tokens=95, first_new_row=90, multiple=128, sampled=True, seed=3,
                                 titles=titles)
    old_embed, old_head = np.asarray(model.embed[...]), np.asarray(model.lm_head[...])
    rows, want = vocab.title_rows(old_embed[:90], titles)  # the pretrained rows only
    np.testing.assert_array_equal(rows, [90, 91, 93])
    embed = np.asarray(resized.embed[...])
    np.testing.assert_allclose(embed[rows], want, atol=1e-6)
    np.testing.assert_array_equal(embed[:90], old_embed[:90])
    sampled = np.asarray(vocab.resize_vocab(model, 95, 90, 128, sampled=True, seed=3).embed[...])
    np.testing.assert_array_equal(embed[[92, 94]], sampled[[92, 94]])  # no item's code: sampled as without titles
    _, head_want = vocab.title_rows(old_head[:, :90].T, titles)
    np.testing.assert_allclose(np.asarray(resized.lm_head[...])[:, rows].T, head_want, atol=1e-6)
