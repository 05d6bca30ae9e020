"""`model.prompt_style = "papers"`: the papers' task wording, system turns and eval prompt, and the plain-text tasks.

The expected strings are written out here by hand from the papers' prompts (SIDReasoner's data code), not
imported from the module under test.
"""
import json

import numpy as np
import pytest

from sidjax.configs import base_config, validate
from sidjax.data import task_names, tasks
from sidjax.data.formatting import ChatFormat
from test_formatting import CHATML, tokenizer  # noqa: F401 (a fixture)
from test_tasks import TITLES, tiny_corpus, tiny_dataset, tiny_item_sids

HEAD = ("Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n")


def _history(split, row, dataset, sids):
    s = dataset.splits[split]
    h = s.history[row, : s.history_len[row]].tolist()
    return h, ", ".join(sids[i] for i in h), int(s.target[row])


def test_every_task_in_the_papers_wording():
    dataset, sids = tiny_dataset(), tiny_item_sids()
    corpus = tiny_corpus(dataset, sids)
    h, history, target = _history("train", 2, dataset, sids)
    titles = ", ".join(f'"{TITLES[i]}"' for i in h)

    def example(task, row=0):
        return tasks.task_examples(task, dataset, sids, "train", corpus=corpus, style="papers")[row]

    expected = {
        tasks.SIDHIS2SID: (
            "Can you predict the next possible item that the user may expect?",
            f"The user has interacted with items {history} in chronological order. Can you predict the next "
            "possible item that the user may expect?"),
        tasks.SIDHIS2TITLE: (
            "Can you recommend the next item for the user based on their interaction history?",
            f"The user has sequentially interacted with items {history}. Can you recommend the next item for him? "
            "Tell me the title of the item?"),
        tasks.TITLEHIS2SID: (
            "Based on the user's historical interaction with item titles, predict the semantic ID of the next item "
            "they may expect.",
            f"The user has interacted with the following items in chronological order: {titles}. Can you predict "
            "the next item the user may expect?"),
        tasks.TITLEHIS2TITLE: (
            "Given a list of items the user recently enjoyed, please write a new item that the user may buy.",
            f"The user has played the following items before: {titles}"),
        tasks.REASONING: (
            "Can you recommend the next item for the user based on their interaction history?",
            f"The user has sequentially interacted with items {history}. Can you recommend the next item for him? "
            "Let's think step by step before making recommendation. Directly output the item SID after thinking."),
    }
    for task, (system, user) in expected.items():
        e = example(task, 2)
        assert e.context == (("system", HEAD + system),) and e.prompt == user, task
    assert example(tasks.REASONING, 2).target == f"<think>\nreason train 2\n</think>\n\n{sids[target]}"
    title2sid, sid2title = example(tasks.TITLE2SID, 3), example(tasks.SID2TITLE, 3)
    assert title2sid.prompt == f"Which item has the title: {TITLES[3]}?" and title2sid.target == sids[3]
    assert sid2title.prompt == f'What is the title of item "{sids[3]}"?' and sid2title.target == TITLES[3]
    assert title2sid.context == sid2title.context == (("system", HEAD + "Answer the question about item identification."),)
    # Tasks 7 and 8: plain LM text in every chat style.
    for style in ("chat", "papers"):
        for task in (task_names.ITEM_ENRICH, tasks.USER_NARRATIVE):
            e = tasks.task_examples(task, dataset, sids, "train", corpus=corpus, style=style)[0]
            assert e.plain and e.prompt == "" and e.context == ()


def test_the_papers_evaluate_with_their_own_direct_prompt():
    sids = tiny_item_sids()[:2]
    direct = tasks.next_item_prompt(sids, "papers", "direct")
    assert direct.prompt == ("Can you predict the next possible item the user may expect, given the following "
                             f"chronological interaction history: {sids[0]}, {sids[1]}")
    assert direct.context == (("system", HEAD + "Can you predict the next possible item that the user may expect?"),)
    reasoning = tasks.next_item_prompt(sids, "papers", "reasoning")
    assert reasoning.prompt.endswith("Directly output the item SID after thinking.")
    # The chat style asks at eval exactly as it trains.
    assert tasks.next_item_prompt(sids, "chat", "direct").prompt == tasks.sid_history_prompt(sids)
    assert tasks.next_item_prompt(sids, "chat", "direct").context == ()
    assert tasks.next_item_prompt(sids, "sid_sequence", "direct").prompt == sids[0] + sids[1]


def test_system_turns_and_plain_text_in_tokens(tokenizer):  # noqa: F811
    fmt = ChatFormat(tokenizer, eos_token="<|im_end|>", chat_template=CHATML, prompt_style="papers")
    sids = tiny_item_sids()
    (ids,) = fmt.prompt_ids([tasks.next_item_prompt(sids[:2], "papers", "direct")])
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n" + HEAD) and text.endswith("<|im_start|>assistant\n")
    narrative = f"The user interacted with {sids[0]}. The next item is {sids[1]}."
    (enc,) = fmt.encode([tasks.Example(task_names.USER_NARRATIVE, "", narrative, plain=True)])
    assert enc.prompt_len == 0 and enc.loss_mask.all()  # the loss covers the whole text, eos included
    assert tokenizer.decode(enc.input_ids.tolist(), skip_special_tokens=False) == narrative + "<|im_end|>"


def test_the_papers_style_is_a_config_choice():
    config = base_config()
    config.model.prompt_style = "papers"
    validate(config)
    config.model.prompt_style = "paper"
    with pytest.raises(ValueError, match="model.prompt_style"):
        validate(config)


def test_a_papers_style_run_trains_and_evaluates_in_both_modes(tmp_path):
    from sidjax.stages import run_pipeline

    config = base_config()
    config.stages = ("data", "sids", "teacher", "sft", "reason_sft", "eval", "eval:reasoning")
    config.entries = {"eval:reasoning": {"mode": "reasoning"}}
    config.sids.source = "paper"
    config.model.update(dict(preset="tiny", bpe_vocab_size=512, prompt_style="papers"))
    config.teacher.max_users = 8
    for task in config.sft.tasks:
        config.sft.tasks[task] = 8 if task in (tasks.SIDHIS2SID, tasks.TITLE2SID, tasks.USER_NARRATIVE) else 0
    for section in (config.sft, config.reason_sft):
        section.update(dict(max_steps=1, batch_size=4, eval_batch_size=4, warmup_steps=1, log_every=1,
                            length_buckets=(512,), max_eval_batches=1))
    config.eval.update(dict(models=("reason_sft",), splits=("test",), beams=2, topk=(1, 2), batch_size=4, max_users=4,
                            max_think_tokens=8))
    validate(config)
    summaries = run_pipeline(config, tmp_path)
    assert summaries["eval"]["test"]["users"] == summaries["eval:reasoning"]["test"]["users"] == 4
    saved = json.loads((tmp_path / "sft" / "tokenizer_config.json").read_text())
    assert saved["sidjax_prompt_style"] == "papers"
    assert np.isfinite(summaries["sft"]["final_train_loss"])
