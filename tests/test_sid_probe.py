"""The SID probe: task 2's prompt in the model's wording, greedy titles, scored by the items' metadata."""
import numpy as np
import pytest

from sidjax.data import papers_wording
from sidjax.data.dataset import Item, Split
from sidjax.data.tasks import item_title_prompt
from sidjax.eval import sid_probe
from test_evaluate import build


def test_a_title_scores_the_kind_as_whole_words_the_brand_anywhere_and_the_exact_title():
    item = Item(title="Gorilla Duct Tape, 1.88 in x 30 yd", brand="GORILLA")
    assert sid_probe.score_title(item, "duct tape", "Gorilla Duct Tape, 1.88 in x 30 yd") == (True, True, True)
    assert sid_probe.score_title(item, "duct tape", "gorilla duct tape roll") == (True, True, False)
    assert sid_probe.score_title(item, "duct tape", "Duct Tapes by 3M") == (False, False, False)
    assert sid_probe.score_title(item, "tape", "tape-measure") == (False, False, False)  # a hyphen joins words
    unbranded = Item(title="Hex bolts", brand="")
    assert sid_probe.score_title(unbranded, "bolts", "hex bolts, brand unknown") == (True, False, False)


def test_the_probe_asks_task_2_in_the_models_wording():
    assert item_title_prompt("<a_1><b_2><c_3>", "chat").prompt == 'What is the title of item "<a_1><b_2><c_3>"?'
    papers = item_title_prompt("<a_1><b_2><c_3>", "papers")
    assert papers.prompt == papers_wording.sid2title("<a_1><b_2><c_3>") and papers.context[0][0] == "system"
    with pytest.raises(ValueError, match="item-title task needs a chat prompt style"):
        item_title_prompt("<a_1><b_2><c_3>", "sid_sequence")


def test_probe_decodes_one_title_per_item_greedily_and_scores_it():
    dataset, rec = build()
    split = Split.from_rows([(0, [3, 5], 1), (1, [7], 2), (2, [9, 4, 11], 0)], max_history=10)
    items = sid_probe.latest_items(split, 2)
    assert items == [5, 7]
    guesses = sid_probe.probe_titles(rec, dataset, items + [4], max_new_tokens=6, batch_size=2)
    assert [g.item for g in guesses] == [5, 7, 4]
    assert guesses == sid_probe.probe_titles(rec, dataset, items + [4], max_new_tokens=6, batch_size=3)
    for g in guesses:
        assert (g.kind, g.brand, g.exact) == sid_probe.score_title(dataset.items[g.item], "widget", g.title)
    summary = sid_probe.summarize(guesses)
    assert summary["items"] == 3 and summary["kind"] == np.mean([g.kind for g in guesses])
