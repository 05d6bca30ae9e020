import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sidjax.data.formatting import ChatFormat, encode_all
from sidjax.data.tasks import Example, reasoning_target, sid_history_prompt
from sidjax.sid.codes import vocabulary

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
           "<|end_header_id|>", "<|eot_id|>", "<think>", "</think>"]
CHATML = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}\n"
    "{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
)
LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
SIDS = ["<a_1><b_2><c_3>", "<a_0><b_3><c_1>", "<a_2><b_0><c_0>"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["The user has interacted with items in chronological order.", "Can you predict the next possible item?",
              "Below is an instruction that describes a task. Write a response.", "Which item has the title Drill?"]
    tok.train_from_iterator(corpus * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([t for level in vocabulary([4, 4, 4]) for t in level])
    return tok


def _example(target=SIDS[2]):
    return Example("sidhis2sid", sid_history_prompt(SIDS[:2]), target)


def _split(fmt, enc):
    ids = enc.input_ids.tolist()
    return fmt.tokenizer.decode(ids[: enc.prompt_len], skip_special_tokens=False), ids[enc.prompt_len:]


def test_chatml_prompt_response_and_loss_mask(tokenizer):
    fmt = ChatFormat(tokenizer, eos_token="<|im_end|>", chat_template=CHATML)
    (enc,) = fmt.encode([_example()])
    prompt, response = _split(fmt, enc)
    assert prompt == fmt.prompt_text(_example().prompt)
    assert prompt.endswith("<|im_start|>assistant\n") and SIDS[0] in prompt and SIDS[2] not in prompt
    assert response == [tokenizer.token_to_id(t) for t in ("<a_2>", "<b_0>", "<c_0>", "<|im_end|>")]
    assert enc.input_ids.dtype == np.int32 and enc.loss_mask.tolist() == [False] * enc.prompt_len + [True] * 4
    assert fmt.stop_ids == (tokenizer.token_to_id("<|im_end|>"),)
    # A base model's eos differs from the end of turn: both stop, eos is not appended after a stop.
    base = ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=CHATML)
    (enc,) = base.encode([_example()])
    assert enc.input_ids[-1] == tokenizer.token_to_id("<|im_end|>")
    assert set(base.stop_ids) == {tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")}


@pytest.mark.parametrize("template,bos", [(CHATML, None), (LLAMA3, "<|begin_of_text|>")])
def test_prompt_matches_transformers_apply_chat_template(tokenizer, template, bos):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=template, bos_token=bos, eos_token="<|endoftext|>")
    fmt = ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=template, bos_token=bos)
    context = (("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"))
    for ctx in [(), context]:
        messages = [{"role": r, "content": c} for r, c in ctx] + [{"role": "user", "content": "Which item?"}]
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert fmt.prompt_text("Which item?", ctx) == expected
        full = hf.apply_chat_template(messages + [{"role": "assistant", "content": "X"}], tokenize=False)
        assert full.startswith(expected + "X" + fmt.end_of_turn)
    assert fmt.prompt_ids(["Which item?"]) == [hf(expected_single := hf.apply_chat_template(
        [{"role": "user", "content": "Which item?"}], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]]
    assert expected_single.startswith(bos or "<|im_start|>")


def test_plain_format_without_a_template(tokenizer):
    fmt = ChatFormat(tokenizer, eos_token="<|endoftext|>", bos_token="<|begin_of_text|>")
    example = Example("reasoning", "Which item?", reasoning_target("The user likes drills.", SIDS[0]))
    (enc,) = fmt.encode([example])
    prompt, response = _split(fmt, enc)
    assert prompt.startswith("<|begin_of_text|>Below is an instruction") and prompt.endswith("### Instruction:\nWhich item?\n\n### Response:\n")
    assert tokenizer.decode(response, skip_special_tokens=False) == example.target + "<|endoftext|>"
    assert response[-4:] == [tokenizer.token_to_id(t) for t in ("<a_1>", "<b_2>", "<c_3>", "<|endoftext|>")]
    assert enc.loss_mask.sum() == len(response)


def test_truncation_never_cuts_the_target(tokenizer):
    long = Example("sidhis2sid", sid_history_prompt(SIDS * 20), SIDS[1])
    short = _example()
    for template, bos in [(None, "<|begin_of_text|>"), (CHATML, None)]:
        full_len = len(ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=template, bos_token=bos, max_length=10_000)
                       .encode([long])[0].input_ids)
        limit = full_len - 25
        with pytest.raises(ValueError, match=f"over max_length {limit}"):
            ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=template, bos_token=bos, max_length=limit).encode([long])
        drop = ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=template, bos_token=bos, max_length=limit, truncation="drop")
        kept, dropped = encode_all(drop, [short, long, short])
        assert dropped == 1 and [example for example, _ in kept] == [short, short]
        left = ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=template, bos_token=bos, max_length=limit, truncation="left")
        (enc,) = left.encode([long])
        ids = enc.input_ids.tolist()
        assert len(ids) == limit and ids[enc.prompt_len:enc.prompt_len + 3] == [tokenizer.token_to_id(t) for t in ("<a_0>", "<b_3>", "<c_1>")]
        if bos:
            assert ids[0] == tokenizer.token_to_id(bos)
        tiny = ChatFormat(tokenizer, eos_token="<|endoftext|>", chat_template=template, bos_token=bos, max_length=4, truncation="left")
        with pytest.raises(ValueError, match="never cut"):
            tiny.encode([long])


def test_from_hf_dir_reads_template_and_special_tokens(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": LLAMA3, "bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|eot_id|>"}))
    fmt = ChatFormat.from_hf_dir(tmp_path, max_length=64)
    assert fmt.chat_template == LLAMA3 and fmt.bos_token == "<|begin_of_text|>" and fmt.end_of_turn == "<|eot_id|>"
    assert fmt.max_length == 64
    (tmp_path / "chat_template.jinja").write_text(CHATML)
    assert ChatFormat.from_hf_dir(tmp_path).end_of_turn == "<|im_end|>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="no eos_token"):
        ChatFormat.from_hf_dir(tmp_path)
    with pytest.raises(ValueError, match="not in the tokenizer"):
        ChatFormat(tokenizer, eos_token="<eos-missing>")


def test_sid_sequence_style_is_the_sids_back_to_back_with_no_turns(tokenizer, tmp_path):
    from sidjax.model.tokenizer import tokenizer_config

    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config("sid_sequence")))
    fmt = ChatFormat.from_hf_dir(tmp_path)
    assert fmt.prompt_style == "sid_sequence" and fmt.chat_template is None
    example = Example("sidhis2sid", sid_history_prompt(SIDS[:2], "sid_sequence"), SIDS[2])
    (enc,) = fmt.encode([example])
    assert enc.input_ids.tolist() == [tokenizer.token_to_id(f"<{t}>") for s in SIDS for t in s[1:-1].split("><")]
    assert enc.prompt_len == 6 and enc.loss_mask.tolist() == [False] * 6 + [True] * 3  # no eos: the sequence goes on
    assert fmt.prompt_ids([example.prompt]) == [enc.input_ids[:6].tolist()]
    with pytest.raises(ValueError, match="no chat turns"):
        fmt.encode([Example("replay", "hi", "hello", context=(("user", "a"), ("assistant", "b")))])
    with pytest.raises(ValueError, match="no chat template"):
        ChatFormat(tokenizer, eos_token="<|im_end|>", chat_template=CHATML, prompt_style="sid_sequence")
