"""The papers' formats: byte-for-byte CSV export of the shipped data, CSV import, and bad input."""
import csv
import hashlib
import json

import numpy as np
import pytest

from sidjax.data import minionerec
from sidjax.data.dataset import Item, RecDataset, Split
from sidjax.data.sources import shipped_dir
from sidjax.utils.errors import DataError

NAME = "Industrial_and_Scientific"
TAG = minionerec.papers_tag(5, "2016-10", "2018-11")
SHA256 = {
    "test": "973dd1db4fd549f3f2b40a0f039dbae157ebb92c716197cc246401e4e82c3a46",
    "valid": "12bbb02bced0bd754a8b4e0f9ca4086416e30d12b0b73a2c95e7b195dd67385a",
    "train": "da5f2af4f5047e18023dd4792f65a48bd7c8eab90447dd682fb48ca255d25f8c",
    "info": "bdc51fd9636e361db095c84de4e2650b3dd9606812c92e7a01f3b77c5c1a84f7",
}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_rows(split: Split) -> list:
    return list(zip(split.users.tolist(), split.histories(), split.target.tolist()))


@pytest.fixture(scope="module")
def shipped() -> RecDataset:
    return minionerec.load_recbole_dir(shipped_dir(), NAME, 10)


@pytest.fixture(scope="module")
def exported(shipped, tmp_path_factory):
    directory = tmp_path_factory.mktemp("papers")
    minionerec.export_papers_files(shipped, shipped.paper_sids, directory, TAG)
    return directory


def test_export_of_shipped_data_is_byte_identical_to_the_papers(exported):
    assert TAG == "5_2016-10-2018-11"
    for split in ("train", "valid", "test"):
        assert sha256(minionerec.csv_path(exported, split, NAME, TAG)) == SHA256[split], split
    assert sha256(exported / "info" / f"{NAME}_{TAG}.txt") == SHA256["info"]
    with open(minionerec.csv_path(exported, "train", NAME, TAG), newline="", encoding="utf-8") as f:
        assert sum(1 for _ in csv.reader(f)) == 36259 + 1


def test_importing_the_csvs_gives_back_the_dataset(shipped, exported):
    imported = minionerec.load_csv_dir(exported, NAME, 10)
    assert imported.titles() == shipped.titles()
    assert imported.sequences == shipped.sequences
    assert imported.paper_sids == shipped.paper_sids, "SIDs from the CSV columns"
    for split in ("train", "valid", "test"):
        a, b = imported.splits[split], shipped.splits[split]
        for field in ("users", "history", "history_len", "target"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert imported.items[0].description == ""  # no item.json beside the CSVs


# ---- a tiny category with the papers' layout ----------------------------------------------------------------


TINY_TITLES = {0: "Red pen", 1: "Blue pen, fine", 2: "It's a \"quoted\" pad", 3: "Ink"}
TINY_SIDS = {0: "<a_0><b_0>", 1: "<a_0><b_1>", 2: "<a_1><b_0>", 3: "<a_2><b_5>"}
# user -> full sequence; samples: one per position >= 1, history <= 3, split below.
TINY_SPLITS = {
    "train": [("userX", [0], 1), ("A7", [2], 3), ("userX", [0, 1], 2)],
    "valid": [("A7", [2, 3], 0), ("userX", [0, 1, 2], 3)],
    "test": [("userX", [1, 2, 3], 0)],
}


def write_tiny(directory, splits=TINY_SPLITS, name="Office", with_sids=True):
    for split, rows in splits.items():
        (directory / split).mkdir(parents=True, exist_ok=True)
        columns = minionerec.CSV_COLUMNS if with_sids else minionerec.CSV_COLUMNS[:5]
        with open(directory / split / f"{name}_5_2020-01-2021-01.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            for user, history, target in rows:
                row = [user, str([TINY_TITLES[i] for i in history]), TINY_TITLES[target], str(history), target,
                       str([TINY_SIDS[i] for i in history]), TINY_SIDS[target]]
                w.writerow(row[: len(columns)])
    return directory


def test_import_uses_item_json_and_index_json_beside_the_csvs(tmp_path):
    write_tiny(tmp_path)
    (tmp_path / "index").mkdir()
    items = {str(i): {"title": t, "description": f"about {i}", "brand": "Acme", "categories": "Office"}
             for i, t in TINY_TITLES.items()}
    (tmp_path / "index" / "Office.item.json").write_text(json.dumps(items))
    index = {str(i): ["<a_9>", f"<b_{i}>"] for i in TINY_TITLES}
    (tmp_path / "index" / "Office.index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"Office\.index\.json: item 0: SID \('<a_9>', '<b_0>'\) but the CSVs say"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)
    write_tiny(tmp_path, with_sids=False)  # now the index is the only source of SIDs
    ds = minionerec.load_csv_dir(tmp_path, "Office", 3)
    assert ds.items[2] == Item(TINY_TITLES[2], "about 2", "Acme", "Office")
    assert ds.paper_sids[3] == ("<a_9>", "<b_3>")


def test_import_any_category_with_any_user_names(tmp_path):
    ds = minionerec.load_csv_dir(write_tiny(tmp_path), "Office", 3)
    assert ds.name == "Office" and ds.titles() == [TINY_TITLES[i] for i in range(4)]
    # user names that are not all `A<int>` are numbered in order of first appearance
    assert ds.sequences == {0: (0, 1, 2, 3, 0), 1: (2, 3, 0)}
    assert split_rows(ds.splits["valid"]) == [(1, [2, 3], 0), (0, [0, 1, 2], 3)]
    assert ds.paper_sids[3] == ("<a_2>", "<b_5>")
    shorter = minionerec.load_csv_dir(tmp_path, "Office", 2)
    assert split_rows(shorter.splits["test"]) == [(0, [2, 3], 0)]


def test_import_without_sid_columns_has_no_paper_sids(tmp_path):
    ds = minionerec.load_csv_dir(write_tiny(tmp_path, with_sids=False), "Office", 3)
    assert ds.paper_sids is None and len(ds.splits["train"]) == 3


def test_recbole_round_trip(tmp_path):
    items = tuple(Item(title=f"item {i}", description=f"d{i}", brand="b", categories="c") for i in range(3))
    splits = {s: Split.from_rows([(0, [0, 1], 2), (1, [2], 0)], 10) for s in ("train", "valid", "test")}
    sids = {i: ("<a_0>", f"<b_{i}>") for i in range(3)}
    ds = RecDataset("Tiny", items, {0: (0, 1, 2), 1: (2, 0)}, splits, paper_sids=sids)
    minionerec.write_recbole_dir(ds, tmp_path)
    back = minionerec.load_recbole_dir(tmp_path, "Tiny", 10)
    assert back.items == ds.items and back.sequences == ds.sequences and back.paper_sids == ds.paper_sids
    assert split_rows(back.splits["test"]) == split_rows(ds.splits["test"])


def test_info_round_trip(tmp_path, shipped):
    path = tmp_path / "info.txt"
    minionerec.write_info(path, shipped.items, shipped.paper_sids)
    info = minionerec.read_info(path)
    assert info[5] == ("".join(shipped.paper_sids[5]), shipped.items[5].title) and len(info) == shipped.num_items


# ---- bad input: one clear error naming file, line and field --------------------------------------------------


def rewrite_line(path, line_no, new_line):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_no - 1] = new_line
    path.write_text("\n".join(lines), encoding="utf-8")


def tiny_csv(directory, split):
    return next((directory / split).glob("*.csv"))


def test_malformed_csv_row_names_file_and_line(tmp_path):
    write_tiny(tmp_path)
    path = tiny_csv(tmp_path, "train")
    rewrite_line(path, 3, "A7,['x'],y")
    with pytest.raises(DataError, match=rf"{path.name}:3: expected 7 fields, got 3"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)


def test_unparsable_list_column_names_field(tmp_path):
    write_tiny(tmp_path)
    path = tiny_csv(tmp_path, "valid")
    sids = "\"['<a_1><b_0>', '<a_2><b_5>']\",<a_0><b_0>"
    rewrite_line(path, 2, "A7,\"['Ink', 'Red pen']\",Red pen,\"[2, oops]\",0," + sids)
    with pytest.raises(DataError, match=rf"{path.name}:2: field 'history_item_id': not a Python list literal"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)
    rewrite_line(path, 2, "A7,\"['Ink']\",Red pen,\"[2, 3]\",0," + sids)
    with pytest.raises(DataError, match=r"field 'history_item_title': has 1 titles for 2 history ids"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)
    rewrite_line(path, 2, "A7,\"['Wrong', 'Ink']\",Red pen,\"[2, 3]\",0," + sids)
    with pytest.raises(DataError, match=rf"{path.name}:2: field 'item_title': item 2 is"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)


def test_history_that_does_not_continue_the_user_is_rejected(tmp_path):
    splits = dict(TINY_SPLITS, test=[("userX", [3, 2, 1], 0)])
    write_tiny(tmp_path, splits)
    with pytest.raises(DataError, match=r"test/Office_5_2020-01-2021-01\.csv:2: field 'history_item_id'"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)


def test_unknown_item_id_in_a_sequence(tmp_path, shipped):
    write_tiny(tmp_path)
    items = {"0": {"title": "Red pen"}, "1": {"title": "Blue pen, fine"}}
    (tmp_path / "Office.item.json").write_text(json.dumps(items))
    with pytest.raises(DataError, match=r"train/Office_5_2020-01-2021-01\.csv:3: field 'history_item_id': unknown item id 2"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)
    inter = tmp_path / "Tiny.train.inter"
    inter.write_text(minionerec.INTER_HEADER + "\n0\t0 1\t2\n1\t0 7\t1\n")
    with pytest.raises(DataError, match=r"Tiny\.train\.inter:3: field 'item_id_list': unknown item id 7"):
        minionerec.read_inter(inter, num_items=3)
    sequences = tmp_path / "Tiny.inter.json"
    sequences.write_text(json.dumps({"0": [0, 1], "1": [5]}))
    with pytest.raises(DataError, match=r"Tiny\.inter\.json: user 1: unknown item id 5"):
        minionerec.read_sequences(sequences, num_items=3)


def test_empty_split(tmp_path):
    write_tiny(tmp_path, dict(TINY_SPLITS, valid=[]))
    with pytest.raises(DataError, match=r"valid/Office_5_2020-01-2021-01\.csv: split 'valid' has no samples"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)
    inter = tmp_path / "Tiny.test.inter"
    inter.write_text(minionerec.INTER_HEADER + "\n")
    with pytest.raises(DataError, match=r"Tiny\.test\.inter: has no samples"):
        minionerec.read_inter(inter)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"train/Office_\*\.csv: no matching CSV files"):
        minionerec.load_csv_dir(tmp_path, "Office", 3)
    write_tiny(tmp_path)
    with pytest.raises(DataError, match=r"train/Other_\*\.csv: no matching CSV files \(present: \['Office_5"):
        minionerec.load_csv_dir(tmp_path, "Other", 3)
    with pytest.raises(DataError, match=r"Office\.item\.json: file not found"):
        minionerec.load_recbole_dir(tmp_path, "Office", 3)


def test_malformed_inter_lines(tmp_path):
    inter = tmp_path / "x.inter"
    inter.write_text(minionerec.INTER_HEADER + "\n0\t1 2\t3\n0\t1 2\n")
    with pytest.raises(DataError, match=r"x\.inter:3: expected 3 tab-separated fields, got 2"):
        minionerec.read_inter(inter)
    inter.write_text(minionerec.INTER_HEADER + "\n0\t1 two\t3\n")
    with pytest.raises(DataError, match=r"x\.inter:2: field 'item_id_list': 'two' is not an integer id"):
        minionerec.read_inter(inter)
    inter.write_text(minionerec.INTER_HEADER + "\n0\t\t3\n")
    with pytest.raises(DataError, match=r"x\.inter:2: field 'item_id_list': is empty"):
        minionerec.read_inter(inter)
    inter.write_text("user\titems\titem\n")
    with pytest.raises(DataError, match=r"x\.inter:1: expected header"):
        minionerec.read_inter(inter)


def test_export_needs_a_sid_for_every_item(shipped, tmp_path):
    partial = {i: t for i, t in shipped.paper_sids.items() if i != 17}
    with pytest.raises(DataError, match=r"lacks item ids \[17\]"):
        minionerec.export_papers_files(shipped, partial, tmp_path, TAG)
