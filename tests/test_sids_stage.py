"""The `sids` stage end to end on the shipped data: paper SIDs, RQ-KMeans, RQ-VAE, collision policies."""
import json

import numpy as np
import pytest

from sidjax.configs import ConfigError, base_config, validate
from sidjax.data.minionerec import read_index, read_info
from sidjax.data.sources import shipped_dir
from sidjax.sid import codes
from sidjax.stages import run_pipeline
from sidjax.stages.sids import load_output
from sidjax.utils.errors import DataError

N = 3686


def _run(tmp_path, **sids):
    config = base_config()
    config.stages = ("sids",)
    for key, value in sids.items():
        section, _, leaf = key.rpartition("__")
        (config.sids[section] if section else config.sids)[leaf] = value
    validate(config)
    summary = run_pipeline(config, tmp_path)["sids"]
    return summary, tmp_path / "sids"


def _check_outputs(d, levels):
    sids, level_sizes = load_output(d)
    assert sids.dtype == np.int32 and sids.shape == (N, levels) and len(level_sizes) == levels
    assert (sids >= 0).all() and (sids < np.asarray(level_sizes)).all()
    np.testing.assert_array_equal(codes.read_sids(d / "index.json", N), sids)
    info = read_info(d / "info.txt")
    assert info[5][0] == codes.sid_string(sids[5])
    return sids, json.loads((d / "report.json").read_text())


def test_paper_sids_are_the_shipped_ones(tmp_path):
    summary, d = _run(tmp_path)
    sids, report = _check_outputs(d, 3)
    shipped = read_index(shipped_dir() / "Industrial_and_Scientific.index.json")
    assert read_index(d / "index.json") == shipped
    assert report["final"]["collision_groups"] == 15 and summary["items_sharing_a_sid"] == 31


def test_paper_sids_with_an_appended_level_are_unique(tmp_path):
    summary, d = _run(tmp_path, collision="append")
    sids, report = _check_outputs(d, 4)
    assert len(np.unique(sids, axis=0)) == N and report["final"]["level_sizes"] == [256, 256, 256, 3]
    assert summary["items_sharing_a_sid"] == 0


def test_rqkmeans_with_sinkhorn_and_cached_embeddings(tmp_path):
    knobs = dict(source="rqkmeans", levels=3, codebook_size=16, embed__dim=16, kmeans__iters=3,
                 kmeans__balanced_iters=1)
    summary, d = _run(tmp_path, **knobs)
    sids, report = _check_outputs(d, 3)
    assert report["embedding"]["shape"] == [N, 16] and report["recon_mse"] > 0
    assert report["final"]["items_sharing_a_sid"] < report["quantized"]["items_sharing_a_sid"]
    np.testing.assert_array_equal(sids[:, 0], np.load(d / "sids.npy")[:, 0])
    stamp = (d / "embeddings.npy").stat().st_mtime_ns
    config = base_config()
    config.stages, config.redo = ("sids",), ("sids",)
    for key, value in knobs.items():
        section, _, leaf = key.rpartition("__")
        (config.sids[section] if section else config.sids)[leaf] = value
    run_pipeline(config, tmp_path)
    assert (d / "embeddings.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.load(d / "sids.npy"), sids)


def test_rqvae_on_precomputed_embeddings_with_unique_sids(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).normal(size=(N, 8)).astype(np.float32))
    summary, d = _run(tmp_path, source="rqvae", levels=2, codebook_size=8, collision="append",
                      embed__method="precomputed", embed__path=str(path), rqvae__hidden=(16,), rqvae__code_dim=4,
                      rqvae__epochs=2, rqvae__report_every=1, kmeans__iters=2)
    sids, report = _check_outputs(d, 3)
    assert len(np.unique(sids, axis=0)) == N and summary["items_sharing_a_sid"] == 0
    assert (d / "rqvae_checkpoint" / "rqvae_config.json").exists()
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "rqvae/recon_mse_all" in m] == [1, 2]


def test_bad_knobs_name_their_key(tmp_path):
    config = base_config()
    config.sids.collision = "maybe"
    with pytest.raises(ConfigError, match="sids.collision"):
        validate(config)
    config = base_config()
    config.sids.embed.method = "precomputed"
    with pytest.raises(ConfigError, match="sids.embed.path"):
        validate(config)
    with pytest.raises(DataError, match="3 levels but config key 'sids.levels' is 2"):
        _run(tmp_path, levels=2)
