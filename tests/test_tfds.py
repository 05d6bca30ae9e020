"""The TFDS copy of a dataset (sidjax.data.tfds_copy, experiments.build_tfds): built once, read back
equal to the files it came from, by two processes through the grain loader, and never with TensorFlow."""
import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sidjax.configs import ConfigError, base_config, validate
from sidjax.data import loader
from sidjax.data.sources import load_dataset
from sidjax.data.tfds_copy import build, split_source
from sidjax.utils.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")


def _lcrec_dir(directory: Path, name: str = "Toys", index: bool = True) -> None:
    """A tiny dataset in the LC-Rec layout: 9 items, 6 users, SIDs when `index`."""
    rng = np.random.default_rng(1)
    items = {str(i): {"title": f"Toy {i} \u00e9", "description": f"desc {i}", "brand": "B" if i % 2 else "",
                      "categories": ["Toys", "Games"]} for i in range(9)}
    inter = {str(u): [int(i) for i in rng.choice(9, size=3 + u % 4, replace=False)] for u in range(6)}
    (directory / f"{name}.item.json").write_text(json.dumps(items), encoding="utf-8")
    (directory / f"{name}.inter.json").write_text(json.dumps(inter), encoding="utf-8")
    if index:
        sids = {str(i): [f"<a_{i % 3}>", f"<b_{i}>"] for i in range(9)}
        (directory / f"{name}.index.json").write_text(json.dumps(sids), encoding="utf-8")


def _data(path: Path, data_dir: Path, **keys):
    config = base_config()
    config.data.update({"source": "lcrec", "path": str(path), "name": "Toys", "split": "leave_one_out",
                        "max_history": 3, "data_dir": str(data_dir), **keys})
    validate(config)
    return config.data


def _built(tmp_path: Path, index: bool = True):
    """(the direct read, the same config reading the TFDS copy)."""
    (tmp_path / "files").mkdir()
    _lcrec_dir(tmp_path / "files", index=index)
    files = _data(tmp_path / "files", tmp_path / "tfds")
    direct = load_dataset(files)
    build(direct, files)
    copy = files.copy_and_resolve_references()
    copy.source = "tfds"
    return direct, copy


@pytest.mark.parametrize("index", [True, False], ids=["with_sids", "without_sids"])
def test_copy_reads_back_equal_to_the_files(tmp_path, index):
    direct, copy = _built(tmp_path, index)
    back = load_dataset(copy)
    assert back.name == direct.name and back.items == direct.items
    assert list(back.sequences.items()) == list(direct.sequences.items())  # same users, same order
    assert back.paper_sids == direct.paper_sids and back.paper_sids_origin == direct.paper_sids_origin
    assert (back.paper_sids is None) == (not index)
    for split in SPLITS:
        for key in ("users", "history", "history_len", "target"):
            a, b = getattr(direct.splits[split], key), getattr(back.splits[split], key)
            assert a.dtype == b.dtype and np.array_equal(a, b), (split, key)
    assert back.statistics() == direct.statistics()


def _rows(batches) -> list[tuple]:
    """The real rows of a process's batches, as (user, history, history_len, target)."""
    rows = []
    for batch in batches:
        for i in np.flatnonzero(batch[loader.EXAMPLE_MASK]):
            rows.append((int(batch["users"][i]), tuple(batch["history"][i].tolist()), int(batch["history_len"][i]),
                         int(batch["target"][i])))
    return rows


def test_two_processes_read_disjoint_complete_rows_from_the_copy(tmp_path):
    direct, copy = _built(tmp_path)
    split = direct.splits["train"]
    source = split_source(copy, "train")
    assert len(source) == len(split)
    args = dict(batch_size=4, seed=3, num_epochs=1, drop_remainder=False, shard_count=2)
    per_process = []
    for process in (0, 1):
        from_copy = list(loader.batches(source, shard_index=process, **args))
        from_files = list(loader.batches(loader.split_records(split), shard_index=process, **args))
        assert len(from_copy) == len(from_files)
        for a, b in zip(from_copy, from_files):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        per_process.append(collections.Counter(_rows(from_copy)))
    everything = collections.Counter(zip(split.users.tolist(), map(tuple, split.history.tolist()),
                                         split.history_len.tolist(), split.target.tolist()))
    assert not per_process[0] & per_process[1]  # disjoint
    assert per_process[0] + per_process[1] == everything  # complete, each row once


def test_build_command_and_reading_never_import_tensorflow(tmp_path):
    """The command builds the copy, a run reads it: all in one process that must not load TensorFlow."""
    _lcrec_dir(tmp_path)
    data_dir = tmp_path / "tfds"
    flags = ["--config=experiments/configs/demo.py", "--config.data.source=lcrec", f"--config.data.path={tmp_path}",
             "--config.data.name=Toys", "--config.data.split=leave_one_out", "--config.data.max_history=3",
             f"--config.data.data_dir={data_dir}"]
    script = f"""
import runpy, sys
sys.argv = ["build_tfds"] + {flags!r}
try:
    runpy.run_module("experiments.build_tfds", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
from experiments.configs.demo import get_config
from sidjax.data.sources import load_dataset
from sidjax.data.tfds_copy import split_source
config = get_config()
config.data.update(source="tfds", name="Toys", split="leave_one_out", max_history=3, data_dir={str(data_dir)!r})
dataset = load_dataset(config.data)
split_source(config.data, "test")[0]
print("loaded", dataset.num_items, "tensorflow_datasets" in sys.modules,
      [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded 9 True []" in result.stdout  # tensorflow_datasets was used, tensorflow never loaded
    assert sorted(p.name for p in data_dir.iterdir()) == ["sidjax_items", "sidjax_samples", "sidjax_sequences"]


def test_an_unbuilt_copy_names_its_path_and_the_build_command(tmp_path):
    config = base_config()
    config.data.update(source="tfds", name="Toys", data_dir=str(tmp_path / "none"))
    validate(config)
    with pytest.raises(DataError, match=r"none/sidjax_samples/Toys/1\.0\.0: no TFDS copy .*"
                                        r"python -m experiments\.build_tfds .*data_dir=.*none"):
        load_dataset(config.data)


def test_a_run_must_read_the_copy_with_the_config_it_was_built_with(tmp_path):
    _, copy = _built(tmp_path)
    copy.max_history = 5
    with pytest.raises(DataError, match=r"built with data\.max_history = 3, but config key 'data\.max_history' is 5"):
        load_dataset(copy)


@pytest.mark.parametrize("keys, message", [
    ({"source": "tfds"}, "config key 'data.data_dir': source 'tfds' needs the directory"),
    ({"source": "tfds", "data_dir": "/d", "name": "a/b"}, "config key 'data.name': 'a/b' cannot name a TFDS copy"),
], ids=["no_data_dir", "bad_name"])
def test_config_rules_of_the_tfds_source(keys, message):
    config = base_config()
    config.data.update(keys)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(config)
