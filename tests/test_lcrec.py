"""The LC-Rec / LETTER layout, leave-one-out, the shipped Office data, and SIDs of 2, 3 and 4 levels end to end."""
import gzip
import json

import numpy as np
import pytest

from sidjax.configs import ConfigError, base_config, validate
from sidjax.data import lcrec
from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.data.sources import load_dataset, shipped_dir
from sidjax.data.splits import leave_one_out, resplit
from sidjax.utils.errors import DataError


def _write(path, value, compress=False):
    text = json.dumps(value)
    if compress:
        with gzip.open(str(path) + ".gz", "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _lcrec_dir(directory, name="Toys", levels=3, num_items=12, num_users=10, index=True, compress=False):
    """A dataset nobody here has seen, in the LC-Rec layout: only the documented keys."""
    rng = np.random.default_rng(0)
    items = {str(i): {"title": f"Toy &amp; game {i}", "description": f"desc {i}", "brand": "B",
                      "categories": ["Toys", "Games"]} for i in range(num_items)}
    items["3"] = {"title": "", "description": ["A wooden <b>train</b> set", "with tracks"]}  # no title
    items["4"] = {"categories": "Toys, Puzzles"}  # only categories
    inter = {str(u): [int(i) for i in rng.choice(num_items, size=4 + u % 4, replace=False)] for u in range(num_users)}
    inter["0"] = [1, 2, 1, 5, 2]  # repeated items stay
    _write(directory / f"{name}.item.json", items, compress)
    _write(directory / f"{name}.inter.json", inter, compress)
    if index:
        sids = {str(i): [f"<{chr(97 + level)}_{(i >> (2 * level)) % 4 if level < levels - 1 else i}>"
                         for level in range(levels)] for i in range(num_items)}
        _write(directory / f"{name}.index.json", sids, compress)
    return inter


def _lcrec_config(path, name="Toys", **data):
    config = base_config()
    config.data.update({"source": "lcrec", "path": str(path), "name": name, "split": "leave_one_out",
                        "max_history": 20, **data})
    return config


def tiny_sid_sequence_model(config):
    """A tiny SID-sequence model with two SFT steps on the `sidseq` task (the end-to-end runs here)."""
    config.model.update(dict(preset="tiny", bpe_vocab_size=512, prompt_style="sid_sequence"))
    for task in config.sft.tasks:
        config.sft.tasks[task] = 0
    config.sft.tasks.sidseq = -1
    config.sft.update(dict(max_steps=2, batch_size=4, eval_batch_size=4, warmup_steps=1, log_every=1,
                           length_buckets=(32, 96), max_eval_batches=1))


def test_leave_one_out_rows_and_order():
    splits = leave_one_out({7: (1, 2, 1, 3, 4), 8: (5, 6, 7)}, max_history=2)
    assert splits["test"].users.tolist() == [7, 8] and splits["test"].target.tolist() == [4, 7]
    assert splits["test"].histories() == [[1, 3], [5, 6]]
    assert splits["valid"].target.tolist() == [3, 6] and splits["valid"].histories() == [[2, 1], [5]]
    train = splits["train"]
    # Farthest from each user's last train item first, so latest(n) keeps the most recent targets.
    assert list(zip(train.users.tolist(), train.histories(), train.target.tolist())) == [
        (7, [1], 2), (7, [1, 2], 1)]
    assert train.latest(1).target.tolist() == [1]


def test_leave_one_out_needs_three_items_per_user():
    with pytest.raises(DataError, match="user 3 has 2"):
        leave_one_out({1: (1, 2, 3), 3: (4, 5)}, 10, origin="x.json")


def test_lcrec_directory_loads_with_the_documented_keys_alone(tmp_path):
    inter = _lcrec_dir(tmp_path, compress=True)
    config = _lcrec_config(tmp_path)
    validate(config)
    ds = load_dataset(config.data)
    assert ds.num_items == 12 and ds.sequences[0] == (1, 2, 1, 5, 2)
    assert ds.items[0].title == "Toy & game 0" and ds.items[0].categories == "Toys, Games"
    assert ds.items[3].title == "A wooden train set with tracks" and ds.items[3].brand == ""
    assert ds.items[4].title == "Toys, Puzzles"
    assert len(ds.splits["test"]) == len(inter) and ds.splits["test"].histories()[0] == [1, 2, 1, 5]
    assert len(ds.splits["train"]) == sum(len(s) - 3 for s in inter.values())
    assert ds.paper_sids[5] == ("<a_1>", "<b_1>", "<c_5>")


def test_lcrec_errors_name_the_file_and_item(tmp_path):
    _lcrec_dir(tmp_path)
    items = json.loads((tmp_path / "Toys.item.json").read_text())
    items["6"] = {"title": "", "description": ""}
    _write(tmp_path / "Toys.item.json", items)
    with pytest.raises(DataError, match=r"Toys.item.json.*item 6: every text field"):
        load_dataset(_lcrec_config(tmp_path).data)
    items["6"] = {"title": 42}
    _write(tmp_path / "Toys.item.json", items)
    with pytest.raises(DataError, match=r"item 6: expected a string"):
        load_dataset(_lcrec_config(tmp_path).data)
    del items["6"]
    _write(tmp_path / "Toys.item.json", items)
    with pytest.raises(DataError, match=r"missing \[6\]"):
        load_dataset(_lcrec_config(tmp_path).data)


def test_lcrec_unknown_item_in_a_history_is_named(tmp_path):
    inter = _lcrec_dir(tmp_path)
    inter["2"] = [0, 1, 99]
    _write(tmp_path / "Toys.inter.json", inter)
    with pytest.raises(DataError, match=r"Toys.inter.json.*user 2: unknown item id 99"):
        load_dataset(_lcrec_config(tmp_path).data)


def test_several_index_files_need_data_index_file(tmp_path):
    _lcrec_dir(tmp_path)
    (tmp_path / "Toys.index.rq-kmeans.json").write_text((tmp_path / "Toys.index.json").read_text())
    with pytest.raises(DataError, match="data.index_file"):
        load_dataset(_lcrec_config(tmp_path).data)
    assert load_dataset(_lcrec_config(tmp_path, index_file="Toys.index.rq-kmeans.json").data).paper_sids


def test_lcrec_without_an_index_has_no_paper_sids(tmp_path):
    _lcrec_dir(tmp_path, index=False)
    assert load_dataset(_lcrec_config(tmp_path).data).paper_sids is None


def test_the_lcrec_layout_has_no_time_split():
    config = _lcrec_config("/somewhere", split="time")
    with pytest.raises(ConfigError, match="data.split.*no timestamps"):
        validate(config)
    config = base_config()
    config.data.name = "Office"
    with pytest.raises(ConfigError, match="data.split.*no timestamps"):
        validate(config)
    config.data.name = "Beauty"
    with pytest.raises(ConfigError, match="data.name.*not shipped"):
        validate(config)


def test_leave_one_out_resplits_a_time_split_source():
    ds = RecDataset(name="t", items=tuple(Item(f"i{i}") for i in range(4)), sequences={0: (0, 1, 2, 3), 1: (3, 2, 1)},
                    splits={s: Split.from_rows([(0, [0], 1)], 5) for s in SPLITS})
    out = resplit(ds, "leave_one_out", 5, "t")
    assert out.splits["test"].target.tolist() == [3, 1] and out.splits["train"].target.tolist() == [1]
    assert resplit(ds, "time", 5, "t") is ds


def test_shipped_office_is_the_papers_split():
    assert {p.name for p in shipped_dir("Office").iterdir()} >= {
        "Office.inter.json.gz", "Office.item.json.gz", "Office.index.rq-kmeans.json.gz", "PROVENANCE.md"}
    config = base_config()
    config.data.update(dict(name="Office", split="leave_one_out", max_history=20))
    validate(config)
    ds = load_dataset(config.data)
    stats = ds.statistics()
    assert (stats["users"], stats["items"], stats["interactions"]) == (4905, 2420, 53258)
    assert (stats["train_samples"], stats["valid_samples"], stats["test_samples"]) == (38543, 4905, 4905)
    assert not any("&amp;" in t or "&quot;" in t for t in ds.titles()) and all(ds.titles())
    assert {len(s) for s in ds.paper_sids.values()} == {4}
    assert int(ds.splits["test"].history_len.max()) == 20


@pytest.mark.parametrize("levels", [2, 4])  # 3 levels: every other test
def test_sids_of_any_level_count_run_every_stage(tmp_path, levels):
    _lcrec_dir(tmp_path, levels=levels, num_items=16, num_users=12)
    config = _lcrec_config(tmp_path)
    config.stages = ("data", "sids", "sft", "grpo", "eval", "baselines")
    config.sids.update(dict(source="paper", levels=levels, codebook_size=16, collision="none"))
    tiny_sid_sequence_model(config)
    config.sft.distill_weight = 0.5  # the Markov chain's soft targets on every train sequence
    config.grpo.update(dict(steps=1, batch_size=2, group_size=4, prompt_length=96, log_every=1))
    config.eval.update(dict(splits=("test",), beams=4, topk=(1, 4), batch_size=4))
    config.baselines.update(dict(methods=("popularity",), topk=(1, 10)))
    validate(config)
    from sidjax.stages import run_pipeline

    summaries = run_pipeline(config, tmp_path / "run")
    assert np.load(tmp_path / "run" / "sids" / "sids.npy").shape == (16, levels)
    test = summaries["eval"]["test"]
    assert 0.0 <= test["HR@1"] <= test["HR@4"] <= 1.0 and test["users"] == 12
    assert summaries["baselines"]["popularity"]["hit"] == "sid"
    assert summaries["sft"]["distilled_examples"] == summaries["sft"]["train_examples"] > 0


def test_a_catalogue_of_20k_items_goes_through_every_stage(tmp_path):
    """Trie, beam search, both re-scorers, baselines and eval at 20,000 items (a synthetic catalogue)."""
    num_items, num_users = 20_000, 64
    rng = np.random.default_rng(1)
    codes = rng.choice(32 ** 3, size=num_items, replace=False)
    _write(tmp_path / "Big.item.json", {str(i): {"title": f"thing {i}"} for i in range(num_items)})
    _write(tmp_path / "Big.inter.json", {str(u): rng.choice(num_items, size=5, replace=False).tolist()
                                         for u in range(num_users)})
    _write(tmp_path / "Big.index.json", {str(i): [f"<a_{c // 1024}>", f"<b_{c // 32 % 32}>", f"<c_{c % 32}>"]
                                         for i, c in enumerate(codes.tolist())})
    config = _lcrec_config(tmp_path, name="Big")
    config.stages = ("data", "sids", "sft", "sasrec", "markov", "eval", "baselines")
    config.sids.update(dict(source="paper", codebook_size=32, collision="none"))
    tiny_sid_sequence_model(config)
    config.sft.update(dict(max_steps=1, batch_size=8, eval_batch_size=8, length_buckets=(32,)))
    config.baselines.sasrec.update(dict(dim=8, layers=1, max_epochs=1, patience=1, dropouts=(0.0,), batch_size=32))
    config.baselines.topk = (1, 10)
    config.eval.update(dict(models=("sft",), splits=("test",), beams=10, topk=(1, 10), batch_size=32,
                            rescore=("sasrec", "markov"), rescore_weights=(0.5, 0.5)))
    validate(config)
    from sidjax.stages import run_pipeline

    summaries = run_pipeline(config, tmp_path / "run")
    assert summaries["data"]["items"] == num_items
    assert summaries["eval"]["test"]["users"] == num_users
    assert set(summaries["baselines"]) >= {"popularity", "sasrec", "markov"}
