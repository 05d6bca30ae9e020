"""(prompt, target) text -> (input_ids, loss_mask) with the model's tokenizer.

The prompt is rendered the way the model will see it at inference: the
tokenizer's chat template (a user turn + the generation prompt) when it has
one, otherwise a plain instruction format. The response is the target, the
template's end-of-turn marker, and eos (unless the response already ends in a
stop token). Prompt and response are tokenized separately, exactly as
generation sees them, and the loss covers the response tokens only.

The "sid_sequence" style (a model trained from scratch on SIDs alone) has no
chat turns: the prompt is the task's text as is, the response the target with
no end-of-turn or eos (a user's sequence does not end after the next item).

Truncation never cuts the target: a too-long example raises (`"error"`), is
skipped (`"drop"`), or loses the start of its prompt (`"left"`).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer

from sidjax.data.task_names import CHAT_STYLES, SID_SEQUENCE_STYLE
from sidjax.data.tasks import PROMPT_STYLES, Example
from sidjax.model.tokenizer import PROMPT_STYLE_KEY

TRUNCATION = ("error", "drop", "left")
PLAIN_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_SENTINEL = "\x00SIDJAX_RESPONSE\x00"


@dataclasses.dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray  # int32 [T]
    loss_mask: np.ndarray  # bool [T]: True on response tokens (target, end of turn, eos)
    prompt_len: int


def _compile_template(template: str):
    """Compile an HF chat template the way transformers does (sandboxed jinja2, trim/lstrip blocks)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template)


class ChatFormat:
    """How a model's prompts and answers are laid out in tokens; shared by SFT, eval and RL."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        eos_token: str,
        chat_template: str | None = None,
        bos_token: str | None = None,
        system_prompt: str | None = None,
        max_length: int = 1024,
        truncation: str = "error",
        prompt_style: str = "chat",
    ):
        if truncation not in TRUNCATION:
            raise ValueError(f"truncation '{truncation}' is not one of {TRUNCATION}")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style '{prompt_style}' is not one of {PROMPT_STYLES}")
        if prompt_style == SID_SEQUENCE_STYLE and chat_template is not None:
            raise ValueError("the 'sid_sequence' prompt style has no chat template")
        self.prompt_style = prompt_style
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self._template = _compile_template(chat_template) if chat_template is not None else None
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.truncation = truncation
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.eos_id = self._token_id(eos_token, "eos_token")
        self.bos_id = self._token_id(bos_token, "bos_token") if bos_token else None
        self.end_of_turn = self._end_of_turn()
        stops = [self.eos_id]
        turn_ids = tokenizer.encode(self.end_of_turn, add_special_tokens=False).ids if self.end_of_turn else []
        if len(turn_ids) == 1 and turn_ids[0] != self.eos_id:
            stops.append(turn_ids[0])
        self.stop_ids: tuple[int, ...] = tuple(stops)

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike, **kwargs) -> "ChatFormat":
        """tokenizer.json + tokenizer_config.json (+ chat_template.jinja / .json) of a local HF model dir."""
        d = Path(path)
        if not (d / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{d / 'tokenizer.json'}: no tokenizer.json in the model directory")
        config_path = d / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        if (d / "chat_template.jinja").is_file():
            config["chat_template"] = (d / "chat_template.jinja").read_text(encoding="utf-8")
        elif (d / "chat_template.json").is_file():
            config["chat_template"] = json.loads((d / "chat_template.json").read_text(encoding="utf-8")).get(
                "chat_template")
        return cls.from_tokenizer_config(Tokenizer.from_file(str(d / "tokenizer.json")), config, **kwargs)

    @classmethod
    def from_tokenizer_config(cls, tokenizer: Tokenizer, config: dict, **kwargs) -> "ChatFormat":
        """The format a tokenizer_config.json's content describes (chat template, special tokens, prompt style)."""
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)

        def token(name: str) -> str | None:
            value = config.get(name)
            return value.get("content") if isinstance(value, dict) else value

        eos = kwargs.pop("eos_token", None) or token("eos_token")
        if not eos:
            raise ValueError("the tokenizer config (tokenizer_config.json) has no eos_token; pass eos_token= explicitly")
        return cls(tokenizer, eos_token=eos, chat_template=template,
                   bos_token=kwargs.pop("bos_token", None) or token("bos_token"),
                   prompt_style=config.get(PROMPT_STYLE_KEY, "chat"), **kwargs)

    def _token_id(self, token: str, name: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{name} '{token}' is not in the tokenizer's vocabulary")
        return token_id

    # ------------------------------------------------------------ text

    def _messages(self, prompt: str, context: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        messages = [{"role": role, "content": content} for role, content in context]
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages + [{"role": "user", "content": prompt}]

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self._template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token or "", eos_token=self.eos_token
        )

    def _end_of_turn(self) -> str:
        """What the template writes after an assistant answer (e.g. `<|im_end|>`), without trailing space."""
        if self.chat_template is None:
            return ""
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}]
        text = self._render(messages, add_generation_prompt=False)
        if _SENTINEL not in text:
            raise ValueError("the chat template does not render the assistant's content")
        return text.split(_SENTINEL, 1)[1].rstrip()

    def prompt_text(self, prompt: str, context: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt up to where the model starts answering."""
        if self.prompt_style == SID_SEQUENCE_STYLE:
            if context:
                raise ValueError("the 'sid_sequence' prompt style has no chat turns (replay examples need 'chat')")
            return (self.bos_token or "") + prompt
        messages = self._messages(prompt, context)
        if self.chat_template is not None:
            return self._render(messages, add_generation_prompt=True)
        head = (self.bos_token or "") + PLAIN_PREAMBLE
        turns = []
        for m in messages:
            if m["role"] == "system":
                head = (self.bos_token or "") + m["content"]
            elif m["role"] == "user":
                turns.append(f"### Instruction:\n{m['content']}\n\n### Response:\n")
            else:
                turns.append(f"{m['content']}{self.eos_token}\n\n")
        return head + "\n\n" + "".join(turns)

    def response_text(self, target: str) -> str:
        return target + self.end_of_turn

    # ------------------------------------------------------------ tokens

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def prompt_ids(self, prompts: Sequence[str | Example]) -> list[list[int]]:
        """Token ids of prompts for generation (eval, RL), never truncated: a text is one user turn, an
        Example's prompt comes with its context (a system turn)."""
        return self._encode_texts([self.prompt_text(p) if isinstance(p, str) else self.prompt_text(p.prompt, p.context)
                                   for p in prompts])

    def _example_prompt(self, example: Example) -> str:
        if example.plain:  # plain LM text: only the sequence start precedes it
            return self.bos_token or ""
        return self.prompt_text(example.prompt, example.context)

    def encode(self, examples: Sequence[Example]) -> list[Encoded | None]:
        """One Encoded per example; None where truncation="drop" skipped a too-long one."""
        prompts = self._encode_texts([self._example_prompt(e) for e in examples])
        responses = self._encode_texts([e.target if e.plain else self.response_text(e.target) for e in examples])
        return [self._assemble(p, r, e) for p, r, e in zip(prompts, responses, examples)]

    def _assemble(self, prompt: list[int], response: list[int], example: Example) -> Encoded | None:
        if self.prompt_style in CHAT_STYLES and (not response or response[-1] not in self.stop_ids):
            response = response + [self.eos_id]
        total = len(prompt) + len(response)
        if total > self.max_length:
            where = f"a '{example.task}' example is {total} tokens, over max_length {self.max_length}"
            if self.truncation == "drop":
                return None
            if self.truncation == "error" or len(response) >= self.max_length:
                raise ValueError(f"{where} (the target is never cut; raise max_length or use truncation='drop')")
            head = prompt[:1] if self.bos_id is not None and prompt[:1] == [self.bos_id] else []
            tail = self.max_length - len(response) - len(head)
            prompt = head + prompt[len(prompt) - tail:]
        ids = np.asarray(prompt + response, dtype=np.int32)
        mask = np.zeros(ids.shape[0], dtype=bool)
        mask[len(prompt):] = True
        return Encoded(ids, mask, len(prompt))


def encode_all(fmt: ChatFormat, examples: Iterable[Example]) -> tuple[list[tuple[Example, Encoded]], int]:
    """Encode every example; returns (the kept ones with their encodings, how many truncation='drop' skipped)."""
    examples = list(examples)
    kept = [(example, e) for example, e in zip(examples, fmt.encode(examples)) if e is not None]
    return kept, len(examples) - len(kept)
