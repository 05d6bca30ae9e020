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
