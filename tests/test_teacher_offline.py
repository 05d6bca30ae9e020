"""The offline template teacher, the corpus files, and the `teacher` stage on the shipped data."""
import json

import numpy as np
import pytest

from sidjax.configs import base_config
from sidjax.configs.sft import mixture_knobs
from sidjax.data import tasks
from sidjax.data.corpus import ITEMS_FILE, USERS_FILE, load_corpus, write_corpus
from sidjax.data.sources import load_dataset, shipped_dir
from sidjax.sid.codes import read_sids
from sidjax.stages import DONE, run_pipeline
from sidjax.teacher import prompts
from sidjax.teacher.offline import write_offline
from sidjax.utils.errors import DataError
from sidjax.utils.settings import settings_from
from test_tasks import tiny_dataset, tiny_item_sids

LOOSE = prompts.Bounds(min_chars=20, max_chars=4000)


def _all_rows(dataset):
    return [(s, r) for s in ("train", "valid") for r in range(len(dataset.splits[s]))]


def test_template_text_is_deterministic_marked_and_obeys_the_teacher_rules():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    items, users = write_offline(dataset, sids, range(dataset.num_items), _all_rows(dataset))
    assert (items, users) == write_offline(dataset, sids, range(dataset.num_items), _all_rows(dataset))
    assert {t.source for t in items} | {u.source for u in users} == {"template"}
    for t in items:
        item = dataset.items[t.item]
        assert t.sid == sids[t.item] and item.title in t.analysis
        assert prompts.check_item_narrative(item, t.sid, LOOSE)(t.narrative) is None
    for u in users:
        split = dataset.splits[u.split]
        history = split.history[u.index, : split.history_len[u.index]].tolist()
        assert (u.user, u.target) == (int(split.users[u.index]), int(split.target[u.index]))
        titles, h_sids = [dataset.items[h].title for h in history], [sids[h] for h in history]
        target_title, target_sid = dataset.items[u.target].title, sids[u.target]
        assert prompts.check_user_reasoning(titles, h_sids, target_title, target_sid, LOOSE)(u.reasoning) is None
        assert prompts.check_user_narrative(titles, h_sids, target_title, target_sid, LOOSE)(u.narrative) is None
        assert u.narrative.endswith(f"The next item is {target_sid}.")


def test_corpus_round_trip_feeds_the_tasks(tmp_path):
    dataset, sids = tiny_dataset(), tiny_item_sids()
    items, users = write_offline(dataset, sids, range(dataset.num_items), _all_rows(dataset))
    counts = write_corpus(tmp_path, items, users, {"teacher": "offline", "template": True})
    assert counts == {"items": 8, "users": 7}
    corpus = load_corpus(tmp_path)
    assert corpus.template and sorted(corpus.items.values(), key=lambda t: t.item) == items
    reasoning = tasks.task_examples(tasks.REASONING, dataset, sids, "valid", corpus=corpus)
    assert [e.target.rsplit("\n", 1)[1] for e in reasoning] == [sids[2], sids[6]]


def test_corpus_files_are_validated(tmp_path):
    dataset, sids = tiny_dataset(), tiny_item_sids()
    items, users = write_offline(dataset, sids, [0, 1], [("train", 0)])
    write_corpus(tmp_path, items, users, {"teacher": "offline", "template": True})
    good = (tmp_path / USERS_FILE).read_text()
    record = json.loads(good)
    for bad, message in [
        ("{oops\n", r"users.jsonl:1: not valid JSON"),
        (json.dumps({**record, "extra": 1}) + "\n", r"users.jsonl:1: expected exactly the fields"),
        (json.dumps({**record, "target": "3"}) + "\n", r"users.jsonl:1: field 'target' must be int"),
    ]:
        (tmp_path / USERS_FILE).write_text(bad)
        with pytest.raises(DataError, match=message):
            load_corpus(tmp_path)
    (tmp_path / ITEMS_FILE).unlink()
    with pytest.raises(DataError, match="items.jsonl: teacher corpus file is missing"):
        load_corpus(tmp_path)


def test_teacher_stage_on_the_shipped_data(tmp_path):
    config = base_config()
    config.stages = ("teacher",)
    config.teacher.max_users = 40
    config.teacher.user_splits = ("train", "valid")
    sids = read_sids(shipped_dir() / "Industrial_and_Scientific.index.json.gz", 3686)
    (tmp_path / "sids").mkdir()
    np.save(tmp_path / "sids" / "sids.npy", sids)
    (tmp_path / "sids" / DONE).write_text(json.dumps({"summary": {}}))
    summary = run_pipeline(config, tmp_path)["teacher"]
    assert summary["template"] and summary["items"] == 3686 and summary["users"] == 80
    corpus = load_corpus(tmp_path / "teacher")
    assert corpus.manifest["teacher"] == "offline" and {k[0] for k in corpus.users} == {"train", "valid"}
    dataset = load_dataset(config.data)
    item_sids = tasks.sid_strings(sids)
    mixture = settings_from(tasks.TaskMixture, mixture_knobs("reason_sft"))
    examples = tasks.build_mixture(mixture, dataset, item_sids, "train", corpus)
    assert len(examples) == 40 and all(e.target.startswith("<think>\n") for e in examples)


def test_teacher_prompts_and_checks_follow_sidreasoner():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    history, target = [0, 1], 2
    items = [dataset.items[i] for i in history]
    titles, h_sids = [i.title for i in items], [sids[i] for i in history]
    text = prompts.user_reasoning_messages(items, h_sids, dataset.items[target], sids[target], LOOSE)[1]["content"]
    # The analyst sees every item by SID with its description, and the true next item.
    assert all(f"{sids[i]}: {dataset.items[i].title}" in text for i in (*history, target))
    assert "workshop" in text  # the descriptions ("A sturdy ... for the workshop.")
    check = prompts.check_user_reasoning(titles, h_sids, dataset.items[target].title, sids[target], LOOSE)
    assert check(f"After {h_sids[1]} the user needs a matching part for the same job.") is None
    assert "titles appear" in check(f"After {titles[1]} the user needs a matching part for the same job.")
    assert "no product of the history" in check("The user needs a matching part for the same job, clearly.")
    assert "names the next product" in check(f"After {h_sids[1]} the user buys {sids[target]} for the same job.")
    # Without the target (teacher.explain_target=False) the analyst sees the history only; a right guess is no leak.
    blind = prompts.user_reasoning_messages(items, h_sids, None, None, LOOSE)[1]["content"]
    assert all(f"{sids[i]}: {dataset.items[i].title}" in blind for i in history)
    assert sids[target] not in blind and dataset.items[target].title not in blind and "bought next" not in blind
    blind_check = prompts.check_user_reasoning(titles, h_sids, None, None, LOOSE)
    assert blind_check(f"After {h_sids[1]} the user buys {sids[target]} for the same job.") is None
    assert "titles appear" in blind_check(f"After {titles[1]} the user needs a matching part for the same job.")
    narrative = prompts.check_item_narrative(dataset.items[0], sids[0], LOOSE, min_sentences=10)
    assert "write at least 10" in narrative(f"{sids[0]} is a tool. It cuts wood.")
    assert narrative(" ".join(f"{sids[0]} does job number {k}." for k in range(10))) is None
    analysis = prompts.item_analysis_messages(dataset.items[0], LOOSE)[1]["content"]
    assert all(f"{heading}: ..." in analysis for heading in ("Product type", "Key features", "Target customers"))
