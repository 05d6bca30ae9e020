import json
import re
from pathlib import Path

import numpy as np
import pytest

from sidjax.configs.sft import mixture_knobs, validate_mixture
from sidjax.data import task_names, tasks
from sidjax.data.corpus import Corpus, ItemText, UserText
from sidjax.data.dataset import Item, RecDataset, Split
from sidjax.sid.codes import sid_string
from sidjax.utils.errors import DataError
from sidjax.utils.settings import settings_from

TITLES = ["Alpha Drill", "Bravo Saw", "Charlie Tape", "Delta Glue", "Echo Gloves", "Foxtrot Mask", "Golf Level", "Hotel Clamp"]
SIDS = np.asarray([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 2, 1], [2, 0, 0], [2, 1, 3], [3, 3, 3], [3, 3, 3]], dtype=np.int32)
ROWS = {  # (user, history, target); user 0's second train row re-buys item 1
    "train": [(0, [0], 1), (0, [0, 1], 1), (1, [2, 3], 4), (2, [5, 6, 7], 0), (3, [4], 5)],
    "valid": [(0, [0, 1, 1], 2), (1, [2, 3, 4], 6)],
    "test": [(0, [0, 1, 1, 2], 3), (2, [5, 6, 7, 0], 7)],
}


def tiny_dataset() -> RecDataset:
    items = tuple(Item(title=t, description=f"['A sturdy {t.split()[1].lower()} for the workshop.']", brand="Acme" if k % 2 else "")
                  for k, t in enumerate(TITLES))
    splits = {name: Split.from_rows(rows, max_history=4) for name, rows in ROWS.items()}
    sequences = {0: (0, 1, 1, 2, 3), 1: (2, 3, 4, 6), 2: (5, 6, 7, 0, 7), 3: (4, 5)}
    return RecDataset(name="tiny", items=items, sequences=sequences, splits=splits).check("tiny")


def tiny_item_sids() -> list[str]:
    return tasks.sid_strings(SIDS)


def tiny_corpus(dataset: RecDataset, item_sids, splits=("train",)) -> Corpus:
    items = {i: ItemText(i, item_sids[i], f"analysis {i}", f"Item {item_sids[i]} is great.", "template") for i in range(dataset.num_items)}
    users = {}
    for split in splits:
        s = dataset.splits[split]
        for r in range(len(s)):
            users[(split, r)] = UserText(split, r, int(s.users[r]), int(s.target[r]), f"reason {split} {r}",
                                         f"narrative ends {item_sids[int(s.target[r])]}", "template")
    return Corpus(path=Path("corpus"), items=items, users=users, manifest={"template": True})


def test_sid_strings_use_the_codes_format():
    assert tiny_item_sids()[3] == "<a_1><b_2><c_1>" == sid_string([1, 2, 1])


def _history(split, i, dataset):
    s = dataset.splits[split]
    return s.history[i, : s.history_len[i]].tolist(), int(s.target[i])


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_sequence_tasks_have_real_targets_and_no_leaks(split):
    dataset, sids = tiny_dataset(), tiny_item_sids()
    n = len(dataset.splits[split])
    for task, target_of in [
        (tasks.SIDHIS2SID, lambda t: sids[t]),
        (tasks.SIDHIS2TITLE, lambda t: TITLES[t]),
        (tasks.TITLEHIS2SID, lambda t: sids[t]),
        (tasks.TITLEHIS2TITLE, lambda t: TITLES[t]),
    ]:
        examples = tasks.task_examples(task, dataset, sids, split)
        assert len(examples) == n
        for i, ex in enumerate(examples):
            hist, target = _history(split, i, dataset)
            assert ex.task == task and ex.target == target_of(target)
            by_sid = task in (tasks.SIDHIS2SID, tasks.SIDHIS2TITLE)
            names = [sids[h] if by_sid else TITLES[h] for h in hist]
            positions = [ex.prompt.index(name) for name in names]
            assert positions == sorted(positions), "history must be recited in time order"
            if target not in hist:
                assert sids[target] not in ex.prompt and TITLES[target] not in ex.prompt


def test_main_task_prompt_is_the_public_function():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    ex = tasks.task_examples(tasks.SIDHIS2SID, dataset, sids, "test")[1]
    assert ex.prompt == tasks.sid_history_prompt([sids[5], sids[6], sids[7], sids[0]])
    assert ex.prompt == (
        "The user has interacted with items <a_2><b_1><c_3>, <a_3><b_3><c_3>, <a_3><b_3><c_3>, <a_0><b_0><c_0> "
        "in chronological order. Can you predict the next possible item that the user may expect?"
    )


def test_item_tasks_train_only_and_ambiguous_sids_skipped():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    t2s = tasks.task_examples(tasks.TITLE2SID, dataset, sids, "train")
    assert [(e.prompt, e.target) for e in t2s] == [(f'Which item has the title "{TITLES[i]}"?', sids[i]) for i in range(8)]
    s2t = tasks.task_examples(tasks.SID2TITLE, dataset, sids, "train")
    assert [e.target for e in s2t] == TITLES[:6]  # items 6 and 7 share a SID
    assert all(TITLES[i] not in e.prompt for i, e in enumerate(s2t))
    for task in (tasks.TITLE2SID, tasks.SID2TITLE):
        assert tasks.task_examples(task, dataset, sids, "valid") == []


def test_corpus_tasks_and_reasoning_target():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    corpus = tiny_corpus(dataset, sids)
    enrich = tasks.task_examples(task_names.ITEM_ENRICH, dataset, sids, "train", corpus=corpus)
    assert [e.target for e in enrich] == [f"Item {s} is great." for s in sids]
    assert all(e.plain and e.prompt == "" and e.context == () for e in enrich)  # plain LM text, as SIDReasoner
    reasoning = tasks.task_examples(tasks.REASONING, dataset, sids, "train", corpus=corpus)
    assert len(reasoning) == 5
    hist, target = _history("train", 2, dataset)
    assert reasoning[2].target == f"<think>\nreason train 2\n</think>\n\n{sids[target]}"
    assert reasoning[2].prompt == tasks.reasoning_prompt([sids[h] for h in hist])
    assert "step by step" in reasoning[2].prompt and sids[target] not in reasoning[2].prompt
    narratives = tasks.task_examples(tasks.USER_NARRATIVE, dataset, sids, "train", corpus=corpus)
    assert narratives[2].target.endswith(sids[target]) and narratives[2].plain and narratives[2].prompt == ""
    assert tasks.task_examples(tasks.REASONING, dataset, sids, "valid", corpus=corpus) == []
    with pytest.raises(ValueError, match="teacher corpus"):
        tasks.task_examples(tasks.REASONING, dataset, sids, "train")


def test_corpus_for_other_data_is_rejected():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    corpus = tiny_corpus(dataset, sids)
    bad = dict(corpus.users)
    rec = bad[("train", 1)]
    bad[("train", 1)] = UserText(rec.split, rec.index, rec.user, 7, rec.reasoning, rec.narrative, rec.source)
    with pytest.raises(DataError, match=r"\(train, 1\) does not match"):
        tasks.task_examples(tasks.REASONING, dataset, sids, "train", corpus=Corpus(corpus.path, corpus.items, bad, {}))


def test_mixture_caps_seed_and_splits(tmp_path):
    dataset, sids = tiny_dataset(), tiny_item_sids()
    section = mixture_knobs("sft")
    section.tasks.title2sid = 3
    section.tasks.titlehis2title = 0
    section.task_seed = 7
    mixture = settings_from(tasks.TaskMixture, section)
    corpus = tiny_corpus(dataset, sids)
    train = tasks.build_mixture(mixture, dataset, sids, "train", corpus)
    counts = tasks.task_counts(train)
    assert counts == {"title2sid": 3, "sid2title": 6, "sidhis2title": 5, "sidhis2sid": 5, "titlehis2sid": 5,
                      "item_enrich": 8, "user_narrative": 5}
    assert train == tasks.build_mixture(mixture, dataset, sids, "train", corpus), "same seed, same examples"
    valid = tasks.build_mixture(mixture, dataset, sids, "valid", corpus)
    assert tasks.task_counts(valid) == {"sidhis2title": 2, "sidhis2sid": 2, "titlehis2sid": 2}
    valid_targets = {e.target for e in valid if e.task == "sidhis2sid"}
    assert valid_targets == {sids[2], sids[6]}
    with pytest.raises(ValueError, match="teacher corpus"):
        tasks.build_mixture(mixture, dataset, sids, "train", None)


def test_replay_is_mixed_in_train_only_and_validated(tmp_path):
    dataset, sids = tiny_dataset(), tiny_item_sids()
    path = tmp_path / "replay.jsonl"
    chats = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]},
    ]
    path.write_text("\n".join(json.dumps(c) for c in chats) + "\n")
    section = mixture_knobs("reason_sft")
    section.tasks.reasoning = 0
    section.tasks.sidhis2sid = -1
    section.replay_path = str(path)
    mixture = settings_from(tasks.TaskMixture, section)
    train = tasks.build_mixture(mixture, dataset, sids, "train")
    replay = [e for e in train if e.task == tasks.REPLAY]
    assert sorted((e.prompt, e.target, e.context) for e in replay) == [
        ("2+2?", "4", (("system", "Be brief."),)), ("Capital of France?", "Paris", ())]
    assert tasks.task_counts(tasks.build_mixture(mixture, dataset, sids, "valid")) == {"sidhis2sid": 2}
    for line, message in [
        ("not json", r"replay.jsonl:2: not valid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}), r"replay.jsonl:2: expected an object"),
        (json.dumps({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}), r":2: messages\[0\]"),
        (json.dumps({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}), r":2: the last two"),
    ]:
        path.write_text(json.dumps(chats[1]) + "\n" + line + "\n")
        with pytest.raises(DataError, match=message):
            tasks.load_replay(path)


def test_mixture_knobs_validate():
    from sidjax.configs import ConfigError

    section = mixture_knobs("sft")
    validate_mixture(section, "sft")
    section.tasks.sidhis2sid = -2
    with pytest.raises(ConfigError, match="sft.tasks.sidhis2sid"):
        validate_mixture(section, "sft")
    section = mixture_knobs("sft")
    for name in tasks.TASKS:
        section.tasks[name] = 0
    with pytest.raises(ConfigError, match="nothing to train on"):
        validate_mixture(section, "sft")
    section = mixture_knobs("sft")
    section.replay_path = "/nonexistent/replay.jsonl"
    with pytest.raises(ConfigError, match="sft.replay_path"):
        validate_mixture(section, "sft")


def _items(text: str) -> list[str]:
    """Concatenated 3-level SIDs, one string per item."""
    tokens = re.findall(r"<[a-z]_\d+>", text)
    return ["".join(tokens[k : k + 3]) for k in range(0, len(tokens), 3)]


def test_sidseq_covers_every_next_item_sample_exactly_once():
    """Unfolded, the sequences give back each split's (history, target) samples, no more, no fewer."""
    dataset, sids = tiny_dataset(), tiny_item_sids()
    for split in ("train", "valid", "test"):
        examples = tasks.task_examples(tasks.SIDSEQ, dataset, sids, split, style="sid_sequence")
        unfolded = []
        for e in examples:
            prompt, target = _items(e.prompt), _items(e.target)
            for k, item in enumerate(target):
                unfolded.append((tuple(prompt + target[:k]), item))
        s = dataset.splits[split]
        samples = [(tuple(sids[i] for i in s.history[r, : s.history_len[r]]), sids[int(s.target[r])]) for r in range(len(s))]
        assert sorted(unfolded) == sorted(samples)
    train = tasks.task_examples(tasks.SIDSEQ, dataset, sids, "train", style="sid_sequence")
    assert tasks.Example(tasks.SIDSEQ, sids[0], sids[1] + sids[1], items=(0, 1, 1)) in train  # user 0's two samples


def test_prompt_styles_keep_their_own_tasks():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    assert tasks.sid_history_prompt(sids[:2], "sid_sequence") == sids[0] + sids[1]
    with pytest.raises(ValueError, match="needs the 'sid_sequence' prompt style"):
        tasks.task_examples(tasks.SIDSEQ, dataset, sids, "train")
    with pytest.raises(ValueError, match="needs a chat prompt style"):
        tasks.task_examples(tasks.REASONING, dataset, sids, "train", corpus=tiny_corpus(dataset, sids), style="sid_sequence")


def test_recent_train_samples_limit_the_sequence_tasks_to_the_latest_train_rows():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    section = mixture_knobs("sft")
    section.recent_train_samples = 2  # train rows 3 and 4: (2, [5, 6, 7], 0) and (3, [4], 5)
    mixture = settings_from(tasks.TaskMixture, section)
    corpus = tiny_corpus(dataset, sids)
    train = tasks.build_mixture(mixture, dataset, sids, "train", corpus)
    counts = tasks.task_counts(train)
    for task in ("sidhis2title", "sidhis2sid", "titlehis2sid", "user_narrative"):
        assert counts[task] == 2, task
    assert counts["title2sid"] == counts["item_enrich"] == 8  # item tasks keep every item
    assert {e.target for e in train if e.task == "sidhis2sid"} == {sids[0], sids[5]}
    valid = tasks.build_mixture(mixture, dataset, sids, "valid", corpus)
    assert tasks.task_counts(valid)["sidhis2sid"] == 2  # valid is never cut
    sequences = tasks.task_examples(tasks.SIDSEQ, dataset, sids, "train", style="sid_sequence", recent=2)
    assert sorted(e.target for e in sequences) == sorted([sids[0], sids[5]])
    section.recent_train_samples = -1
    with pytest.raises(Exception, match="recent_train_samples"):
        validate_mixture(section, "sft")
