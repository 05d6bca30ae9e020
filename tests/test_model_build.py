"""config.model -> a bundle (model, tokenizer with SID blocks, SID layout) for the scratch and hf sources."""
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from sidjax import bundle as bundles
from sidjax.configs import ConfigError, base_config, validate
from sidjax.data.dataset import Item, RecDataset
from sidjax.model import tokenizer as bpe, vocab
from sidjax.sid.codes import sid_string
from sidjax.train import checkpoint as ckpt

LEVELS = [4, 4, 3]
SIDS = np.array([[0, 1, 2], [3, 3, 0], [1, 0, 1]])
WORDS = ["cordless drill", "safety gloves nitrile", "hex bolts stainless steel", "measuring tape 5m"]


def _dataset():
    items = tuple(Item(title=f"{w} {i}", description=f"a {w} for the workshop", brand="Acme")
                  for i, w in enumerate(WORDS * 10))
    return RecDataset(name="tiny", items=items, sequences={}, splits={})


def _forward(model, tokens):
    return nnx.jit(lambda m, t, p: m(t, p)[0])(model, tokens, jnp.broadcast_to(jnp.arange(tokens.shape[1]),
                                                                            tokens.shape))


def test_scratch_builds_bpe_sid_blocks_and_padded_vocab():
    config = base_config()
    config.model.preset = "tiny"
    config.model.bpe_vocab_size = 512
    config.model.dropout = 0.1
    built = bundles.build(config, _dataset(), SIDS, LEVELS)
    assert built.model.config.dropout == 0.1
    n = built.tokenizer.get_vocab_size(with_added_tokens=True)
    assert built.model.config.vocab_size % 128 == 0 and built.model.config.vocab_size >= n
    assert built.level_offsets.tolist() == [n - 11, n - 7, n - 3]
    ids = built.tokenizer.encode(sid_string(SIDS[1])).ids
    assert ids == (built.level_offsets + SIDS[1]).tolist()
    assert built.tokenizer_config["eos_token"] == bpe.EOS_TOKEN and built.format.eos_token == bpe.EOS_TOKEN
    assert built.level_sizes == tuple(LEVELS) and built.config is config
    assert _forward(built.model, jnp.asarray([ids])).shape == (1, 3, built.model.config.vocab_size)


def test_a_stage_trains_with_its_own_remat_and_the_next_stage_sets_its_own(tmp_path):
    config = base_config()
    config.model.preset = "tiny"
    config.model.bpe_vocab_size = 512
    config.mesh.remat = "dots"
    assert bundles.build(config, _dataset(), SIDS, LEVELS).model.config.remat == "dots"
    built = bundles.build(config, _dataset(), SIDS, LEVELS, remat="none")
    assert built.model.config.remat == "none"
    bundles.save(built, tmp_path)
    best = ckpt.BestModel(tmp_path)
    best.save(1, nnx.state(built.model))
    best.wait()
    best.close()
    bundles.finish(tmp_path, 1)
    assert bundles.load(tmp_path).model.config.remat == "none"
    continued = bundles.load(tmp_path, remat="full")
    assert continued.model.config.remat == "full"
    tokens = jnp.asarray([built.tokenizer.encode(sid_string(SIDS[0])).ids])
    np.testing.assert_array_equal(_forward(continued.model, tokens), _forward(built.model, tokens))


def test_hf_source_appends_sids_and_inits_their_rows_as_configured(tmp_path):
    tok = bpe.train_bpe([w for w in WORDS] * 20, vocab_size=300)
    size = tok.get_vocab_size(with_added_tokens=True)
    hf_config = transformers.Qwen3Config(vocab_size=size + 5, hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         head_dim=16)
    transformers.Qwen3ForCausalLM(hf_config).save_pretrained(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    config = base_config()
    config.model.source = "hf"
    config.model.path = str(tmp_path)
    config.model.train_only_new_rows = True
    validate(config)
    built = bundles.build(config, _dataset(), SIDS, LEVELS)
    assert built.first_new_row == size and built.level_offsets[0] == size
    assert built.model.config.vocab_size == -(-(size + sum(LEVELS)) // 128) * 128
    embed = np.asarray(built.model.embed[...])
    np.testing.assert_allclose(embed[size:], np.broadcast_to(embed[:size].mean(0), embed[size:].shape), atol=1e-6)

    config.model.new_rows_init = "sampled"
    sampled = np.asarray(bundles.build(config, _dataset(), SIDS, LEVELS).model.embed[...])
    np.testing.assert_array_equal(sampled[:size], embed[:size])
    sid_rows = sampled[size:size + sum(LEVELS)]
    assert len(np.unique(sid_rows, axis=0)) == sum(LEVELS)  # each SID token its own input from the first step

    config.model.new_rows_init = "titles"
    validate(config)
    items = RecDataset(name="tiny", items=_dataset().items[:len(SIDS)], sequences={}, splits={})  # one per SID
    titled = bundles.build(config, items, SIDS, LEVELS)
    tokens = [np.asarray(titled.tokenizer.encode(t, add_special_tokens=False).ids) for t in items.titles()]
    rows, want = vocab.title_rows(embed[:size], vocab.ItemTitles(tokens, SIDS, titled.level_offsets))
    assert len(rows) == len({(level, code) for sid in SIDS for level, code in enumerate(sid)})
    np.testing.assert_allclose(np.asarray(titled.model.embed[...])[rows], want, atol=1e-6)


def test_train_only_new_rows_needs_a_pretrained_model():
    config = base_config()
    config.model.train_only_new_rows = True
    with pytest.raises(ConfigError, match="model.train_only_new_rows"):
        validate(config)
