"""A byte-level BPE tokenizer trained on the dataset's item text, for models trained from scratch.

Byte-level, so any text (and any SID string) is representable; ChatML special tokens and a
ChatML chat template make scratch models format prompts exactly like Qwen models do, so
the same data pipeline serves both. SID tokens are added afterwards by `vocab.add_sid_tokens`.
"""
from __future__ import annotations

from typing import Any, Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from sidjax.utils.catalog import Item

PROMPT_STYLE_KEY = "sidjax_prompt_style"  # in tokenizer_config.json; absent = "chat"
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, "<|im_start|>", EOS_TOKEN)
THINK_TOKENS = ("<think>", "</think>")  # plain added tokens: they stay visible when decoding
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def item_texts(items: Iterable[Item]) -> Iterable[str]:
    """The text fields of every item, one string per non-empty field."""
    for item in items:
        for text in (item.title, item.description, item.brand, item.categories):
            if text:
                yield text


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> tokenizers.Tokenizer:
    """Byte-level BPE over `texts` with the ChatML special tokens and the think tokens."""
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False) for t in THINK_TOKENS])
    return tokenizer


def tokenizer_config(prompt_style: str = "chat") -> dict[str, Any]:
    """The tokenizer_config.json of a scratch tokenizer (what ChatFormat and HF export read).

    "chat": ChatML turns; "sid_sequence": no template, prompts are the SID text as is.
    """
    if prompt_style == "sid_sequence":
        return {"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, PROMPT_STYLE_KEY: prompt_style,
                "tokenizer_class": "PreTrainedTokenizerFast"}
    return {"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "chat_template": CHAT_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast"}
