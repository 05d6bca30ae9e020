"""Reasoning measures against hand-computed cases."""
import pytest

from sidjax.eval.reasoning_quality import assess, has_loop, skeleton, summarize

CATALOGUE = {"<a_1><b_2><c_3>", "<a_4><b_5><c_6>", "<a_7><b_8><c_9>"}
HISTORY = (["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"], ["Blue PLA Filament 1.75mm", "Digital Caliper"])


def test_a_grounded_closed_reasoning_that_names_its_answer():
    text = ("The user bought <a_1><b_2><c_3> and a digital caliper, so they build 3D prints; "
            "next is more filament: <a_7><b_8><c_9>.</think>")
    got = assess(text, *HISTORY, CATALOGUE, top_sid="<a_7><b_8><c_9>")
    assert got.pop("skeleton") == skeleton(text.split("</think>")[0])
    assert got == {"closed": True, "words": 18, "has_text": True, "loop": False, "grounded": True,
                   "cited_valid": True, "consistent": True, "described": None, "kind_right": None}


def test_the_demos_empty_thought_is_no_reasoning():
    got = assess("<a_7><b_8><c_9></think>", *HISTORY, CATALOGUE, top_sid="<a_4><b_5><c_6>")
    assert got.pop("skeleton") == skeleton("<a_1><b_1><c_1>")  # a SID alone: every such thought is one
    assert got == {"closed": True, "words": 1, "has_text": False, "loop": False, "grounded": False,
                   "cited_valid": True, "consistent": False, "described": None, "kind_right": None}


def test_unclosed_looping_text_with_an_invented_sid_grounded_by_title():
    text = "they like the digital caliper " + "and more and more and more " * 2 + "<a_9><b_9><c_9>"
    got = assess(text, *HISTORY, CATALOGUE, top_sid="<a_1><b_2><c_3>")
    assert got["closed"] is False and got["grounded"] is True  # the title, case-insensitive
    assert got["loop"] is True and got["cited_valid"] is False and got["consistent"] is False
    assert assess("", *HISTORY, CATALOGUE, "<a_1><b_2><c_3>")["cited_valid"] is None
    assert not has_loop("a b c d a b c d".split()) and has_loop("a b c d a b c d a b c d".split())
    # What the demo's models write today: numbers and dots, no words.
    assert assess("3.\n2.\n2.\n2.\n2.0.0.0.0.", *HISTORY, CATALOGUE, "<a_1><b_2><c_3>")["has_text"] is False
    assert assess("mm <a_1><b_2><c_3>, ok", *HISTORY, CATALOGUE, "<a_1><b_2><c_3>")["has_text"] is False
    assert assess("mm <a_1><b_2><c_3>, ok so", *HISTORY, CATALOGUE, "<a_1><b_2><c_3>")["has_text"] is True


def test_summary_shares_leave_out_samples_that_cite_nothing():
    rows = [assess("<a_7><b_8><c_9></think>", *HISTORY, CATALOGUE, "<a_7><b_8><c_9>"),
            assess("no sid here", *HISTORY, CATALOGUE, "<a_7><b_8><c_9>")]  # 3 words
    got = summarize(rows)
    assert got["reasoning/closed"] == 0.5 and got["reasoning/has_text"] == 0.5
    assert got["reasoning/consistent"] == 1.0 and got["reasoning/citing"] == 0.5
    assert got["reasoning/mean_words"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert "reasoning/consistent" not in summarize(rows[1:]) and summarize([]) == {}


def test_distinct_counts_thoughts_that_differ_beyond_their_sids_and_numbers():
    one = "Evidence: <a_1><b_2><c_3> is a tape.\n3. Intent: tape after tape in 12 of 40."
    same = "Evidence:  <a_4><b_5><c_6> is a tape. 3. Intent: tape after tape in 7 of 9."
    other = "Evidence: <a_1><b_2><c_3> is a glue.\n3. Intent: glue after tape in 12 of 40."
    assert skeleton(one) == skeleton(same) != skeleton(other)
    rows = [assess(t + "</think>", *HISTORY, CATALOGUE, "<a_7><b_8><c_9>") for t in (one, same, other, one)]
    assert summarize(rows)["reasoning/distinct"] == 0.5  # 2 skeletons in 4 thoughts
    older = [{k: v for k, v in r.items() if k != "skeleton"} for r in rows]  # records of an older eval
    assert "reasoning/distinct" not in summarize(older)


def test_reasoning_examples_show_history_reasoning_and_top_titles(tmp_path):
    import json

    from sidjax.stages.eval import reasoning_examples

    def record(i):
        return {"split": "valid", "index": i, "user": 10 + i, "history": [{"title": "Caliper"}, {"title": "Glue"}],
                "reasoning": f"<think>thought {i}</think>", "target": {"title": "Tape"}, "hit_rank": i - 1,
                "recommendations": [{"titles": [f"Top {k}", "same SID"]} for k in range(5)]}

    path = tmp_path / "valid.jsonl"
    path.write_text("".join(json.dumps(record(i)) + "\n" for i in range(3)), encoding="utf-8")
    text = reasoning_examples(path)
    assert text.count("example valid sample") == 2 and "sample 2" not in text
    assert "history: Caliper; Glue" in text and "reasoning: '<think>thought 1</think>'" in text
    assert "top 3: Top 0; Top 1; Top 2\n" in text and "target: Tape (hit rank 0)" in text


def test_kind_right_reads_the_kind_each_cited_item_is_named_with():
    from sidjax.eval.reasoning_quality import ItemKinds

    # Items 0 and 3 share a SID (a tape and a glue); item 2 is a duct tape, whose kind holds "tape".
    kinds = ItemKinds(["<a_1><b_2><c_3>", "<a_4><b_5><c_6>", "<a_7><b_8><c_9>", "<a_1><b_2><c_3>"],
                      ["tape", "filament", "duct tape", "Glue"])
    text = ("1. Evidence: the recent items are tape from Gorilla (<a_1><b_2><c_3>, <a_4><b_5><c_6>); "
            "filament from HATCHBOX 1.75 mm (<a_4><b_5><c_6>); glue (<a_9><b_9><c_9>).\n"
            "2. Intent: duct tape (<a_7><b_8><c_9>); not plain TAPE (<a_7><b_8><c_9>).\n"
            "5. Items that matter: <a_1><b_2><c_3>, <a_4><b_5><c_6>.</think> glue <a_4><b_5><c_6>")
    # Described: 2 in the tape clause (1 right: the filament is not a tape), 1 in the filament clause
    # (right; "1.75" does not end it), the invented SID is no real item, 2 in the intent line (duct tape
    # right; "tape" is not a duct tape), none in step 5 (no kind) nor after </think>.
    assert kinds.counts(text.split("</think>")[0]) == (5, 3)
    got = assess(text, *HISTORY, CATALOGUE, "<a_7><b_8><c_9>", kinds)
    assert (got["described"], got["kind_right"]) == (5, 3)
    assert assess(text, *HISTORY, CATALOGUE, "<a_7><b_8><c_9>")["kind_right"] is None
    glue = assess("it is glue from Gorilla (<a_1><b_2><c_3>)", *HISTORY, CATALOGUE, "<a_1><b_2><c_3>", kinds)
    assert (glue["described"], glue["kind_right"]) == (1, 1)  # any item of the SID: "Glue" read case-blind
    assert summarize([got, glue])["reasoning/kind_right"] == pytest.approx(4 / 6)
    assert "reasoning/kind_right" not in summarize([assess("no sid", *HISTORY, CATALOGUE, "<a_1><b_2><c_3>")])
    with pytest.raises(ValueError, match="2 item SIDs but 1 item kinds"):
        ItemKinds(["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"], ["tape"])
