"""Train-state checkpoints round-trip; one bundle directory reloads the same model, tokenizer and SID layout."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers

from sidjax import bundle as bundles
from sidjax.configs import base_config
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.train import checkpoint as ckpt
from sidjax.train.state import make_train_state


@nnx.jit(static_argnums=0)
def _model(seed):
    return CausalLM(preset("tiny", 40).replace(num_layers=1), rngs=nnx.Rngs(seed))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_train_checkpoints_round_trip_arrays_data_state_and_meta_and_keep_the_last(tmp_path):
    state = make_train_state(_model(0), base_config().sft, 10)
    manager = ckpt.TrainCheckpoints(tmp_path, keep=2)
    for step in (1, 2, 3):
        manager.save(step, state.arrays, {"next_index": step}, {"best_loss": 0.5 * step})
    manager.wait()
    assert manager.latest_step() == 3
    assert sorted(int(p.name) for p in (tmp_path / ckpt.CHECKPOINTS).iterdir() if p.name.isdigit()) == [2, 3]
    like = make_train_state(_model(1), base_config().sft, 10).arrays
    arrays, data, meta = manager.restore(3, like)
    manager.close()
    assert data == {"next_index": 3} and meta == {"best_loss": 1.5}
    assert jax.tree.structure(arrays) == jax.tree.structure(state.arrays)
    for got, want in zip(_leaves(arrays), _leaves(state.arrays)):
        np.testing.assert_array_equal(got, want)


def _tokenizer():
    vocab = {"[UNK]": 0, "a": 1, "b": 2, "<a_0>": 3, "<a_1>": 4, "<b_0>": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def _save_bundle(directory, model, config):
    bundles.save(bundles.Bundle(model=model, tokenizer=_tokenizer(), sids=np.array([[0, 0], [1, 0]]),
                                level_offsets=np.array([3, 5]), level_sizes=(2, 1),
                                tokenizer_config={"eos_token": "b"}, config=config, first_new_row=3), directory)


def test_bundle_reloads_the_best_model_tokenizer_sids_and_config(tmp_path):
    model = _model(0)
    config = base_config()
    config.name = "bundle-test"
    _save_bundle(tmp_path, model, config)
    with pytest.raises(FileNotFoundError, match="names no model step"):
        bundles.load(tmp_path)
    best = ckpt.BestModel(tmp_path)
    best.save(7, nnx.state(model))
    best.wait()
    best.close()
    bundles.finish(tmp_path, 7, valid_loss=1.25)
    record = json.loads((tmp_path / bundles.BUNDLE).read_text())
    assert record["valid_loss"] == 1.25 and record["level_sizes"] == [2, 1]
    assert bundles.finished_step(tmp_path) == 7

    bundle = bundles.load(tmp_path)
    assert bundle.step == 7 and bundle.config.name == "bundle-test" and bundle.first_new_row == 3
    assert bundle.tokenizer.encode("a <a_0>").ids == [1, 3]
    assert bundle.tokenizer_config == {"eos_token": "b"} and bundle.format.eos_id == 2
    np.testing.assert_array_equal(bundle.sids, [[0, 0], [1, 0]])
    assert bundle.level_offsets.tolist() == [3, 5] and bundle.level_offsets.dtype == np.int32
    assert bundle.level_sizes == (2, 1)
    tokens = jnp.array([[1, 2, 3, 1]])
    positions = jnp.arange(4)[None]
    forward = nnx.jit(lambda m: m(tokens, positions)[0])
    np.testing.assert_array_equal(forward(bundle.model), forward(model))


def test_bundle_loads_a_train_checkpoints_model_by_step(tmp_path):
    state = make_train_state(_model(2), base_config().sft, 10)
    _save_bundle(tmp_path, state.model(), ml_collections.ConfigDict({"name": "x"}))
    manager = ckpt.TrainCheckpoints(tmp_path, keep=1)
    manager.save(4, state.arrays, {}, {})
    manager.wait()
    manager.close()
    bundle = bundles.load(tmp_path, step=4)
    assert bundle.step == 4
    for got, want in zip(_leaves(nnx.state(bundle.model)), _leaves(state.model_arrays())):
        np.testing.assert_array_equal(got, want)


def test_a_directory_without_a_bundle_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle.json is missing"):
        bundles.load(tmp_path)


def test_a_bundle_written_before_level_sizes_were_recorded_reads_them_from_its_tokenizer(tmp_path):
    model = _model(0)
    _save_bundle(tmp_path, model, ml_collections.ConfigDict({"name": "x"}))
    best = ckpt.BestModel(tmp_path)
    best.save(1, nnx.state(model))
    best.wait()
    best.close()
    bundles.finish(tmp_path, 1)
    record = json.loads((tmp_path / bundles.BUNDLE).read_text())
    del record["level_sizes"]
    (tmp_path / bundles.BUNDLE).write_text(json.dumps(record))
    (tmp_path / "SHA256SUMS").unlink()  # nor checksums
    assert bundles.load(tmp_path).level_sizes == (2, 1)
