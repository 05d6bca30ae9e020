"""An OpenAI-compatible chat client that never pays twice for the same prompt.

Any server speaking chat-completions works (OpenAI, vLLM, Ollama, ...). Every
answer goes through a check; a rejected answer is re-asked with the reason.
Every completion bought (re-asks included) is appended to an on-disk JSONL
cache keyed by the hash of its whole conversation, so a crashed or interrupted
run replays what it already paid for and resumes where it stopped. Transient
failures (429, 5xx, timeouts, connection errors, malformed bodies) are retried
with exponential backoff (or the server's Retry-After); a budget caps requests
and tokens. The API key is read from the environment variable the config names
and is never written anywhere: every error, warning and answer passes through
`sidjax.utils.redact` first, so a server that echoes the Authorization header
leaks it nowhere.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import openai
from absl import logging

from sidjax.teacher.prompts import Check, Messages, clean_answer
from sidjax.utils.redact import looks_like_secret, redact

_RETRY_STATUS = (408, 409, 429)


class TeacherError(RuntimeError):
    """The teacher server failed for good (a non-retryable error, or retries exhausted)."""


class BudgetExceeded(TeacherError):
    """The configured request / token budget is spent; cached answers are kept for a resumed run."""

    def __init__(self, message: str, setting: str):
        super().__init__(message)
        self.setting = setting  # the ClientSettings field that set the budget


class _Malformed(Exception):
    """A 2xx answer that is not a chat completion."""


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """The `teacher` config knobs the client uses (defaults and meanings: sidjax/configs/teacher.py)."""

    base_url: str
    model: str
    api_key_env: str
    concurrency: int
    timeout_s: float
    max_retries: int
    backoff_initial_s: float
    backoff_max_s: float
    max_reasks: int
    max_requests: int
    max_tokens: int
    temperature: float
    max_output_tokens: int


def prompt_key(model: str, messages: Messages, temperature: float, max_output_tokens: int) -> str:
    """Everything that determines the request, hashed: the cache key."""
    payload = json.dumps(
        {"model": model, "messages": messages, "temperature": temperature, "max_output_tokens": max_output_tokens},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """Append-only JSONL of `{"key", "text", "model"}`, one fsynced line per bought completion.

    A crash can only leave a torn last line; it is cut off on open, so the file stays valid JSONL.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logging.warning("teacher cache %s: dropping a torn last line (%d bytes)", self.path, len(data) - end)
            with self.path.open("r+b") as f:
                f.truncate(end)
        for line_no, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}:{line_no}: teacher cache line is not JSON ({e.msg})") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("text"), str):
                raise ValueError(f"{self.path}:{line_no}: teacher cache line needs string fields 'key' and 'text'")
            self._entries[entry["key"]] = entry

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if entry["key"] in self._entries:
                return
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._entries[entry["key"]] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._file.close()


@dataclasses.dataclass
class Usage:
    requests: int = 0  # HTTP requests sent, failed ones included
    tokens: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    rejected: int = 0


class TeacherClient:
    """`ask(messages, check)` -> accepted text or None (rejected after re-asks); thread-safe."""

    def __init__(self, settings: ClientSettings, cache: ResponseCache):
        if looks_like_secret(settings.api_key_env):
            raise TeacherError("api_key_env holds what looks like an API key (not shown): it must name the "
                               "environment variable that holds the key, e.g. OPENAI_API_KEY")
        key = os.environ.get(settings.api_key_env, "")
        if not key:
            raise TeacherError(
                f"environment variable {settings.api_key_env!r} (api_key_env) is not set "
                "(servers without auth accept any non-empty value, e.g. EMPTY)"
            )
        self.settings = settings
        self.cache = cache
        self.usage = Usage()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._secrets = (key,)
        self._client = openai.OpenAI(base_url=settings.base_url, api_key=key, max_retries=0, timeout=settings.timeout_s)

    def ask(self, messages: Messages, check: Check) -> str | None:
        """The first answer that passes `check` (re-asking with the reason), or None when all fail."""
        s = self.settings
        conversation = list(messages)
        for attempt in range(s.max_reasks + 1):
            text = clean_answer(self._cached_complete(conversation))
            reason = check(text)
            if reason is None:
                return text
            if attempt == s.max_reasks:
                break
            with self._lock:
                self.usage.reasks += 1
            conversation += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"Your answer was rejected: {reason}. Write the whole answer again, fixing this."},
            ]
        logging.warning("teacher: answer rejected after %d re-asks: %s", s.max_reasks, self._redact(reason))
        with self._lock:
            self.usage.rejected += 1
        return None

    def _cached_complete(self, conversation: Messages) -> str:
        """One completion per distinct conversation, ever: from the cache, or bought once and stored."""
        s = self.settings
        key = prompt_key(s.model, conversation, s.temperature, s.max_output_tokens)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # the same conversation asked twice at once is still bought once
            entry = self.cache.get(key)
            if entry is not None:
                with self._lock:
                    self.usage.cache_hits += 1
                return entry["text"]
            text = self._complete(conversation)
            self.cache.put({"key": key, "text": text, "model": s.model})
            return text

    def _spend_request(self) -> None:
        s = self.settings
        with self._lock:
            if 0 <= s.max_requests <= self.usage.requests:
                raise BudgetExceeded(f"budget of {s.max_requests} requests spent", "max_requests")
            if 0 <= s.max_tokens <= self.usage.tokens:
                raise BudgetExceeded(f"budget of {s.max_tokens} tokens spent", "max_tokens")
            self.usage.requests += 1

    def _complete(self, messages: Messages) -> str:
        s = self.settings
        for attempt in itertools.count():
            self._spend_request()
            wait = 0.0  # what the server asked for (Retry-After), if anything
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    model=s.model, messages=messages, temperature=s.temperature, max_tokens=s.max_output_tokens
                )
                text, tokens = _parse_completion(raw.http_response.text)
                text = self._redact(text)  # checked, cached and written only without secrets
            except openai.APIStatusError as e:
                if e.status_code not in _RETRY_STATUS and e.status_code < 500:
                    raise TeacherError(self._redact(
                        f"teacher server {s.base_url} refused the request: HTTP {e.status_code} {e.message}")) from None
                failure = f"HTTP {e.status_code}"
                wait = _retry_after(e.response.headers.get("retry-after"))
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                failure = type(e).__name__
            except _Malformed as e:
                failure = f"malformed answer ({e})"
            else:
                with self._lock:
                    self.usage.tokens += tokens
                return text
            if attempt == s.max_retries:
                raise TeacherError(f"teacher server {s.base_url}: {failure}, still failing after {s.max_retries} retries")
            backoff = s.backoff_initial_s * 2**attempt * (0.5 + random.random() / 2)
            delay = min(s.backoff_max_s, max(backoff, wait))
            logging.warning("teacher: %s; retry %d/%d in %.2fs", failure, attempt + 1, s.max_retries, delay)
            with self._lock:
                self.usage.retries += 1
            time.sleep(delay)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def close(self) -> None:
        self._client.close()


def _retry_after(header: str | None) -> float:
    """Seconds from a Retry-After header in its delay-seconds form (0 when absent or a date)."""
    try:
        return max(0.0, float(header)) if header else 0.0
    except ValueError:
        return 0.0


def _parse_completion(body: str) -> tuple[str, int]:
    """(content, total tokens) from a chat-completions JSON body, or _Malformed."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise _Malformed(f"not JSON: {e.msg}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Malformed("no choices[0].message.content") from None
    if not isinstance(content, str):
        raise _Malformed("choices[0].message.content is not a string")
    usage = data.get("usage") if isinstance(data, Mapping) else None
    tokens = usage.get("total_tokens", 0) if isinstance(usage, Mapping) else 0
    return content, int(tokens) if isinstance(tokens, (int, float)) else 0
