"""Several domains in one dataset (data.source = "mix"), views of some of them, and a run that trains on one
domain and scores another."""
import dataclasses
import json

import ml_collections
import numpy as np
import pytest

from sidjax.configs import ConfigError, base_config, validate
from sidjax.configs.data import domain
from sidjax.data import mix, task_names, tasks
from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.sid.codes import SidTrie, prefix_domains
from test_lcrec import _lcrec_dir, tiny_sid_sequence_model
from test_tasks import tiny_corpus, tiny_dataset, tiny_item_sids


def _other_domain() -> RecDataset:
    """A second domain: 3 items, users 0 and 1 (ids that collide with tiny_dataset's), histories <= 2."""
    items = tuple(Item(title=f"Pen {k}") for k in range(3))
    rows = {"train": [(0, [0], 1), (1, [1], 2), (1, [1, 2], 0)], "valid": [(0, [0, 1], 2)], "test": [(1, [2, 0], 1)]}
    splits = {name: Split.from_rows(r, max_history=2) for name, r in rows.items()}
    return RecDataset(name="pens", items=items, sequences={0: (0, 1, 2), 1: (1, 2, 0, 1)}, splits=splits,
                      paper_sids={0: ("<a_0>", "<b_0>"), 1: ("<a_0>", "<b_1>"), 2: ("<a_1>", "<b_0>")}).check("pens")


def _merged(weights=()) -> RecDataset:
    return mix.merge({"tools": tiny_dataset(), "pens": _other_domain()}, weights)


def test_merge_offsets_items_and_users_and_keeps_each_domain_split():
    tools, pens, merged = tiny_dataset(), _other_domain(), _merged()
    assert merged.domains == ("tools", "pens") and merged.num_items == 11
    assert merged.item_domain.tolist() == [0] * 8 + [1] * 3
    assert merged.titles()[8:] == pens.titles()
    for split in SPLITS:
        n = len(tools.splits[split])
        whole, own = merged.splits[split], pens.splits[split]
        assert len(whole) == n + len(own)
        assert whole.history.shape[1] == 4  # the widest domain's history length
        assert whole.target[n:].tolist() == (own.target + 8).tolist()
        assert whole.histories()[n:] == [[i + 8 for i in h] for h in own.histories()]
        assert set(whole.users[n:].tolist()).isdisjoint(whole.users[:n].tolist())  # user ids offset
    assert merged.sequences[max(tools.sequences) + 1] == (8, 9, 10)
    assert merged.paper_sids is None  # tiny_dataset has no index, so no paper SIDs for the mix


def test_mixture_gives_each_domain_its_share_of_the_train_samples():
    merged = _merged(weights=(1.0, 3.0))
    domains = mix.sample_domains(merged, "train")
    assert len(domains) == 8 and np.bincount(domains).tolist() == [2, 6]  # 5 + 3 samples, shared 1:3
    pens = merged.splits["train"].target[domains == 1] - 8
    assert sorted(set(pens.tolist())) == [0, 1, 2] and len(pens) == 6  # all three rows, each twice
    rows = mix.mixture_rows([5, 3], (1.0, 3.0), seed=0)
    assert [len(r) for r in rows] == [2, 6] and all((np.diff(r) >= 0).all() for r in rows)  # in split order
    with pytest.raises(ValueError, match="one positive number per domain"):
        mix.merge({"tools": tiny_dataset(), "pens": _other_domain()}, (1.0,))


def test_a_view_keeps_every_item_id_but_only_its_domain_samples():
    merged = _merged()
    view = mix.restrict(merged, ("pens",))
    assert view.num_items == merged.num_items and view.selected == ("pens",)
    assert view.domain_items().tolist() == [8, 9, 10] and view.statistics()["items"] == 3
    for split in SPLITS:
        assert (view.splits[split].target >= 8).all()
        rows = view.source_rows[split]
        assert merged.splits[split].target[rows].tolist() == view.splits[split].target.tolist()
    assert all(seq[0] >= 8 for seq in view.sequences.values()) and len(view.sequences) == 2
    assert mix.restrict(merged, ("tools", "pens")) is merged
    with pytest.raises(ValueError, match=r"\['shoes'\] are not in the dataset"):
        mix.restrict(merged, ("shoes",))


def test_a_view_teaches_its_own_items_and_finds_corpus_records_by_their_whole_split_row():
    merged = _merged()
    sids = tasks.sid_strings(prefix_domains(np.asarray([[i % 4, i // 4] for i in range(11)]), merged.item_domain))
    corpus = tiny_corpus(merged, sids)
    view = mix.restrict(merged, ("pens",))
    answers = [e.target for e in tasks.task_examples(tasks.TITLE2SID, view, sids, "train")]
    assert answers == sids[8:]
    narratives = tasks.task_examples(task_names.ITEM_ENRICH, view, sids, "train", corpus=corpus)
    assert [e.target for e in narratives] == [f"Item {sids[i]} is great." for i in (8, 9, 10)]
    reasoning = tasks.task_examples(task_names.REASONING, view, sids, "train", corpus=corpus)
    whole_rows = view.source_rows["train"].tolist()  # the corpus was written over the whole train split
    assert [f"reason train {r}" in e.target for e, r in zip(reasoning, whole_rows)] == [True] * 3
    assert all(e.target.endswith(sids[t]) for e, t in zip(reasoning, view.splits["train"].target))


def test_a_trie_of_some_items_ranks_only_those():
    sids = np.asarray([[0, 1, 2], [0, 1, 3], [1, 0, 0], [1, 0, 0], [1, 2, 0]])
    trie = SidTrie.build(sids, (2, 4, 4), items=[2, 3, 4])
    assert trie.leaf_sids.tolist() == [[1, 0, 0], [1, 2, 0]]
    assert trie.leaf_items.tolist() == [[2, 3], [4, -1]]
    assert trie.item_leaf.tolist() == [-1, -1, 0, 0, 1]
    assert trie.codes[0].tolist() == [[1]]  # the first level offers the one domain left
    with pytest.raises(ValueError, match="non-empty subset"):
        SidTrie.build(sids, (2, 4, 4), items=[7])


def _mix_config():
    config = base_config()
    config.data.source = "mix"
    config.data.domains = ml_collections.ConfigDict({"tools": domain(), "office": domain(name="Office",
                                                                                         split="leave_one_out")})
    return config


@pytest.mark.parametrize("change, key, message", [
    (lambda c: c.data.domains.__delattr__("office"), "data.domains", "two or more domains"),
    (lambda c: c.data.update({"mixture": (1.0,)}), "data.mixture", "one positive weight per domain"),
    (lambda c: c.data.domains.office.update({"split": "time"}), "data.domains.office.split", "no timestamps"),
    (lambda c: c.sft.update({"domains": ("shoes",)}), "sft.domains", "are not domains of data.domains"),
    (lambda c: c.update({"stages": ("data", "baselines")}), "stages", "ranks one catalogue"),
])
def test_mix_settings_are_checked_naming_the_key(change, key, message):
    config = _mix_config()
    validate(config)
    change(config)
    with pytest.raises(ConfigError, match=message) as e:
        validate(config)
    assert key in str(e.value)


def test_a_domain_section_takes_only_data_keys_and_domains_need_a_mix():
    config = _mix_config()
    config.data.domains.office.colour = "red"
    with pytest.raises(ConfigError, match="unknown config key 'data.domains.office.colour'"):
        validate(config)
    plain = base_config()
    plain.eval.domains = ("tools",)
    with pytest.raises(ConfigError, match="eval.domains.*set data.source = 'mix'"):
        validate(plain)


@pytest.mark.slow
def test_train_on_one_domain_fine_tune_on_the_other_and_score_each_in_its_own_catalogue(tmp_path):
    """The transfer recipe at toy size: SIDs over both catalogues behind a domain prefix, a model of domain A,
    its fine-tune on B, each entry scored per domain, every recommendation from the scored domain."""
    for name, seed_users in (("Toys", 10), ("Pens", 8)):
        (tmp_path / name).mkdir()
        _lcrec_dir(tmp_path / name, name=name, num_items=12, num_users=seed_users, index=False)
    config = base_config()
    config.stages = ("data", "sids", "sft:a", "sft:ab", "eval:a", "eval:ab")
    config.data.source = "mix"
    config.data.domains = ml_collections.ConfigDict({
        name: domain(source="lcrec", path=str(tmp_path / name), name=name, split="leave_one_out", max_history=20)
        for name in ("Toys", "Pens")})
    config.sids.update(dict(source="rqkmeans", levels=2, codebook_size=4))
    config.sids.embed.update(dict(dim=8, min_df=1, max_df=1.0))
    tiny_sid_sequence_model(config)
    config.eval.update(dict(splits=("test",), beams=4, topk=(1, 4), batch_size=4))
    config.entries = {"sft:a": {"domains": ("Toys",)}, "sft:ab": {"init_from": "sft:a", "domains": ("Pens",)},
                      "eval:a": {"models": ("sft:a",)}, "eval:ab": {"models": ("sft:ab",), "domains": ("Pens",)}}
    validate(config)
    from sidjax.stages import run_pipeline

    summaries = run_pipeline(config, tmp_path / "run")
    sids = np.load(tmp_path / "run" / "sids" / "sids.npy")
    assert sids.shape == (24, 3) and sids[:12, 0].tolist() == [0] * 12 and sids[12:, 0].tolist() == [1] * 12
    assert summaries["sft:a"]["train_examples"] < summaries["sft:ab"]["train_examples"] + 100  # ran on a view
    assert set(summaries["eval:a"]["domains"]) == {"Toys", "Pens"}
    assert set(summaries["eval:ab"]["domains"]) == {"Pens"}
    assert summaries["eval:ab"]["domains"]["Pens"]["test"]["users"] == 8
    for entry, scored in (("eval_a", "Toys"), ("eval_a", "Pens"), ("eval_ab", "Pens")):
        directory = tmp_path / "run" / entry / scored
        assert json.loads((directory / "metrics.json").read_text())["domain"] == scored
        offset = 12 if scored == "Toys" else 0  # domains take item ids in the order of their names
        for line in (directory / "test.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert record["target"]["item"] - offset in range(12)
            assert all(offset <= i < offset + 12 for r in record["recommendations"] for i in r["items"])
    import sidjax

    rec = sidjax.load(tmp_path / "run" / "sft_ab")
    rows = rec.recommend([12, 13], beams=3, domain="Toys")
    assert rows and all(12 <= i < 24 for row in rows for i in row["items"])
    with pytest.raises(ValueError, match="'Shoes' is not one of this model's domains"):
        rec.recommend([12, 13], domain="Shoes")
