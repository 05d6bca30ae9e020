"""`config.data` -> dataset for every source, and the data section's validation."""
import csv
import gzip

import pytest

from sidjax.configs import ConfigError, base_config, validate
from sidjax.data import minionerec
from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.data.sources import load_dataset, shipped_dir
from sidjax.utils.errors import DataError


def data_config(**values):
    config = base_config()
    for key, value in values.items():
        config.data[key] = value
    return config


def tiny_dataset(name: str) -> RecDataset:
    rows = {
        "train": [(0, [0], 1), (1, [1], 2)],
        "valid": [(0, [0, 1], 2), (1, [1, 2], 1)],
        "test": [(0, [0, 1, 2], 0)],
    }
    return RecDataset(
        name=name,
        items=tuple(Item(f"item {i}") for i in range(3)),
        sequences={0: (0, 1, 2, 0), 1: (1, 2, 1)},
        splits={s: Split.from_rows(rows[s], 10) for s in SPLITS},
        paper_sids={i: ("<a_0>", f"<b_{i}>") for i in range(3)},
    )


def test_shipped_files_are_inside_the_package():
    names = sorted(p.name for p in shipped_dir().iterdir())
    assert "PROVENANCE.md" in names
    for suffix in ("item.json", "inter.json", "index.json", "train.inter", "valid.inter", "test.inter"):
        assert f"Industrial_and_Scientific.{suffix}.gz" in names


def test_shipped_source():
    config = data_config()
    validate(config)
    ds = load_dataset(config.data)
    assert ds.statistics()["users"] == 7694 and ds.paper_sids is not None


def test_recbole_and_csv_sources(tmp_path):
    ds = tiny_dataset("Tools")
    minionerec.write_recbole_dir(ds, tmp_path)
    minionerec.export_papers_files(ds, ds.paper_sids, tmp_path, "5_2019-01-2020-01")
    for source in ("recbole", "minionerec_csv"):
        config = data_config(source=source, path=str(tmp_path), name="Tools")
        validate(config)
        loaded = load_dataset(config.data)
        assert loaded.titles() == ds.titles() and loaded.sequences == ds.sequences, source
        assert loaded.paper_sids == ds.paper_sids, source
        assert loaded.splits["test"].histories() == ds.splits["test"].histories(), source


def test_csv_source_reads_gzip_and_crlf(tmp_path):
    """A user's CSVs may be gzipped or have Windows line endings."""
    ds = tiny_dataset("Tools")
    minionerec.export_papers_files(ds, ds.paper_sids, tmp_path, "tag")
    path = minionerec.csv_path(tmp_path, "train", "Tools", "tag")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    valid = minionerec.csv_path(tmp_path, "valid", "Tools", "tag")
    with gzip.open(f"{valid}.gz", "wb") as f:
        f.write(valid.read_bytes())
    valid.unlink()
    loaded = load_dataset(data_config(source="minionerec_csv", path=str(tmp_path), name="Tools").data)
    for split in SPLITS:
        assert loaded.splits[split].histories() == ds.splits[split].histories()


def test_missing_directory_is_a_data_error(tmp_path):
    config = data_config(source="recbole", path=str(tmp_path / "nowhere"), name="Tools")
    with pytest.raises(DataError, match=r"nowhere/Tools\.item\.json: file not found"):
        load_dataset(config.data)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("start_date", "2016/10", r"'data\.start_date': '2016/10' is not a date"),
        ("end_date", "2015-01", r"'data\.end_date': '2015-01' is before start_date"),
        ("max_title_words", 0, r"'data\.max_title_words': must be >= 1"),
        ("name", "", r"'data\.name': must name the dataset"),
        ("split_ratios", (0.8, 0.2, 0.1), r"'data\.split_ratios'"),
    ],
)
def test_data_section_validation_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(data_config(**{key: value}))
