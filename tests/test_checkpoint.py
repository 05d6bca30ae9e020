"""Train-state checkpoints round-trip; one bundle directory reloads the same model, tokenizer and SIDs."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers

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
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2, "<a_0>": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def _save_bundle(directory, model, config):
    ckpt.save_bundle(directory, model_config=model.config, tokenizer=_tokenizer(), sids=np.array([[0, 1], [1, 0]]),
                     level_offsets=np.array([3, 5]), config=config, tokenizer_config={"eos_token": "b"},
                     first_new_row=3)


def test_bundle_reloads_the_best_model_tokenizer_sids_and_config(tmp_path):
    model = _model(0)
    config = base_config()
    config.name = "bundle-test"
    _save_bundle(tmp_path, model, config)
    with pytest.raises(FileNotFoundError, match="names no model step"):
        ckpt.load_bundle(tmp_path)
    best = ckpt.BestModel(tmp_path)
    best.save(7, nnx.state(model))
    best.wait()
    best.close()
    ckpt.finish_bundle(tmp_path, 7, valid_loss=1.25)
    assert json.loads((tmp_path / ckpt.BUNDLE).read_text())["valid_loss"] == 1.25
    assert ckpt.read_bundle_step(tmp_path) == 7

    bundle = ckpt.load_bundle(tmp_path)
    assert bundle.step == 7 and bundle.config.name == "bundle-test" and bundle.first_new_row == 3
    assert bundle.tokenizer.encode("a <a_0>").ids == [1, 3]
    assert bundle.tokenizer_config == {"eos_token": "b"}
    np.testing.assert_array_equal(bundle.sids, [[0, 1], [1, 0]])
    assert bundle.level_offsets.tolist() == [3, 5] and bundle.level_offsets.dtype == np.int32
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
    bundle = ckpt.load_bundle(tmp_path, step=4)
    assert bundle.step == 4
    for got, want in zip(_leaves(nnx.state(bundle.model)), _leaves(state.model_arrays())):
        np.testing.assert_array_equal(got, want)


def test_a_directory_without_a_bundle_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle.json is missing"):
        ckpt.load_bundle(tmp_path)
