"""Faults in saved files: each is refused with one clear error naming the file (or falls back, and says so).

Damaged weights (noise written into the middle of the largest file), NaN parameters, a damaged
latest train checkpoint, a search whose beams are all invalid, and truncated or non-UTF-8 inputs.
"""
import gzip
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax import bundle as bundles
from sidjax.configs import base_config, validate
from sidjax.data import minionerec
from sidjax.data.sources import load_dataset
from sidjax.eval.evaluate import SearchSettings, evaluate_split
from sidjax.stages import run_pipeline
from sidjax.stages.sids import load_output
from sidjax.train import checkpoint as ckpt
from sidjax.train.loop import train_loop
from sidjax.utils.checksums import DamagedFileError
from sidjax.utils.errors import DataError
from tests.test_checkpoint import _model, _save_bundle
from tests.test_evaluate import build
from tests.test_minionerec import tiny_csv, write_tiny
from tests.test_sources import data_config, tiny_dataset


def damage_largest_file(directory):
    """4 KiB of noise (at most half the file) written into the middle of the largest file below `directory`."""
    path = max((p for p in directory.rglob("*") if p.is_file() and p.name != "SHA256SUMS"),
               key=lambda p: p.stat().st_size)
    size = path.stat().st_size
    count = min(4096, size // 2)
    with open(path, "r+b") as f:
        f.seek((size - count) // 2)
        f.write(np.random.default_rng(0).integers(0, 256, count, dtype=np.uint8).tobytes())
    return path


def _finished_bundle(directory, model, step=7):
    _save_bundle(directory, model, base_config())
    best = ckpt.BestModel(directory)
    best.save(step, nnx.state(model))
    best.close()
    bundles.finish(directory, step)


# ---- weights -----------------------------------------------------------------------------------------------


def test_a_damaged_best_model_is_refused_naming_the_file(tmp_path):
    _finished_bundle(tmp_path, _model(0))
    damaged = damage_largest_file(tmp_path / ckpt.BEST / "7")
    with pytest.raises(DamagedFileError, match=rf"{re.escape(str(damaged))}: damaged: .*add it to config key 'redo'"):
        bundles.load(tmp_path)


def test_a_damaged_train_checkpoint_is_refused_when_loaded_by_step(tmp_path):
    _save_bundle(tmp_path, _model(0), base_config())
    manager = ckpt.TrainCheckpoints(tmp_path, keep=1)
    from sidjax.train.state import make_train_state

    manager.save(4, make_train_state(_model(0), base_config().sft, 10).arrays, {}, {})
    manager.close()
    damaged = damage_largest_file(tmp_path / ckpt.CHECKPOINTS / "4")
    with pytest.raises(DamagedFileError, match=re.escape(str(damaged))):
        bundles.load(tmp_path, step=4)


def test_nan_parameters_are_refused_naming_the_parameter(tmp_path):
    model = _model(0)
    k_proj = model.layers[0].attn.k_proj
    k_proj[...] = k_proj[...].at[3, 1, 0].set(jnp.nan)
    _finished_bundle(tmp_path, model)  # checksums are intact: the NaN was saved
    with pytest.raises(ckpt.NonFiniteParamsError, match=r"best/7: model parameter 'layers\.0\.attn\.k_proj' holds NaN"):
        bundles.load(tmp_path)


@pytest.mark.parametrize("name", [bundles.BUNDLE, bundles.TOKENIZER, bundles.SIDS])
def test_a_truncated_bundle_file_is_refused_naming_it(tmp_path, name):
    _finished_bundle(tmp_path, _model(0))
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedFileError, match=rf"{re.escape(str(path))}: damaged: .*config key 'redo'"):
        bundles.load(tmp_path)
    (tmp_path / "SHA256SUMS").unlink()  # without checksums (an older bundle): the reader names the file
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: .*(damaged|truncated).*config key 'redo'"):
        bundles.load(tmp_path)


# ---- a damaged latest train checkpoint: the older one is resumed ------------------------------------------


def _fit_step(arrays, step):
    """One SGD step of a tiny linear regression; the batch comes from the step number."""
    (model, optimizer) = arrays
    rng = np.random.default_rng(step)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = x @ jnp.asarray([1.0, -2.0, 0.5]) + 0.1

    def loss_fn(params):
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(model)
    model = jax.tree.map(lambda p, g: p - 0.1 * g, model, grads)
    return (model, {"count": optimizer["count"] + 1}), {"loss": loss}


def _fit(workdir, total):
    arrays = ({"w": jnp.zeros(3), "b": jnp.zeros(())}, {"count": jnp.zeros((), jnp.int32)})
    checkpoints = ckpt.TrainCheckpoints(workdir, keep=2)
    try:
        return train_loop(arrays, _fit_step, total_steps=total, checkpoints=checkpoints, log_every=1,
                          checkpoint_every=2, desc="fit").arrays
    finally:
        checkpoints.close()


def test_a_damaged_latest_checkpoint_falls_back_to_the_older_one_and_resumes_exactly(tmp_path, caplog):
    uninterrupted = _fit(tmp_path / "once", 6)
    _fit(tmp_path / "twice", 4)  # checkpoints 2 and 4 kept
    checkpoints = tmp_path / "twice" / ckpt.CHECKPOINTS
    damage_largest_file(checkpoints / "4")
    with caplog.at_level(logging.WARNING):
        resumed = _fit(tmp_path / "twice", 6)
    assert "train checkpoint step(s) [4] damaged" in caplog.text and "resuming from the older step 2" in caplog.text
    assert (checkpoints / "damaged_4").is_dir()
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
        np.testing.assert_array_equal(got, want)


def test_no_intact_train_checkpoint_is_an_error_naming_each(tmp_path):
    _fit(tmp_path, 4)
    for step in ("2", "4"):
        damage_largest_file(tmp_path / ckpt.CHECKPOINTS / step)
    with pytest.raises(ckpt.DamagedCheckpointError, match=r"no intact train checkpoint .*step 4: .*step 2: "):
        _fit(tmp_path, 6)


# ---- a search with no valid beam -----------------------------------------------------------------------------


def test_a_search_whose_beams_are_all_invalid_is_an_error_naming_the_user():
    dataset, rec = build()
    rec.model.embed[...] = jnp.full_like(rec.model.embed[...], jnp.nan)  # what loading the damaged weights used to give
    users = dataset.splits["test"].users
    with pytest.raises(ValueError, match=rf"split 'test' sample 0 \(user {users[0]}\): the constrained search found "
                                         "no valid SID beam"):
        evaluate_split(rec, dataset, "test", SearchSettings(beams=5), batch_size=4, ks=(1, 5))


# ---- input files -----------------------------------------------------------------------------------------------


def test_a_non_utf8_byte_in_a_csv_names_the_file_and_line(tmp_path):
    write_tiny(tmp_path)
    path = tiny_csv(tmp_path, "train")
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"Blue", b"Bl\xffe")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: byte \d+ of the line \(0xff\) is not UTF-8"):
        load_dataset(data_config(source="minionerec_csv", path=str(tmp_path), name="Office").data)


def test_a_truncated_json_gz_names_the_file(tmp_path):
    minionerec.write_recbole_dir(tiny_dataset("Tools"), tmp_path)
    plain = tmp_path / "raw" / "Tools.inter.json"
    packed = gzip.compress(plain.read_bytes())
    plain.unlink()
    gz = plain.with_name(plain.name + ".gz")
    gz.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=rf"{re.escape(str(gz))}: cannot be read after line \d+ .*truncated"):
        load_dataset(data_config(source="recbole", path=str(tmp_path), name="Tools").data)


def _sids_run(tmp_path, data_dir, **sids):
    config = data_config(source="recbole", path=str(data_dir), name="Tools")
    config.stages = ("sids",)
    config.sids.update(sids)
    validate(config)
    return config, run_pipeline(config, tmp_path / "work")


def test_an_out_of_range_sid_code_names_the_index_file_and_item(tmp_path):
    dataset = tiny_dataset("Tools")
    minionerec.write_recbole_dir(dataset, tmp_path / "data")
    index = tmp_path / "data" / "index" / "Tools.index.json"
    with pytest.raises(DataError, match=rf"{re.escape(str(index))}: item 2: code 2 at level 1 >= config key "
                                        r"'sids.codebook_size' \(2\)"):
        _sids_run(tmp_path, tmp_path / "data", levels=2, codebook_size=2)


def test_truncated_stage_outputs_name_the_file_and_how_to_redo(tmp_path):
    minionerec.write_recbole_dir(tiny_dataset("Tools"), tmp_path / "data")
    config, _ = _sids_run(tmp_path, tmp_path / "data", levels=2, codebook_size=4)
    stage = tmp_path / "work" / "sids"
    sids = stage / "sids.npy"
    sids.write_bytes(sids.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"{re.escape(str(sids))}: is not a readable .npy .*add 'sids' to config "
                                        "key 'redo'"):
        load_output(stage)
    done = stage / "DONE.json"
    done.write_text(done.read_text()[:10])
    with pytest.raises(DataError, match=rf"{re.escape(str(done))}: is damaged .*add 'sids' to config key 'redo'"):
        run_pipeline(config, tmp_path / "work")
