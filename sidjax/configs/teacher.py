"""`config.teacher`: who writes the enrichment / reasoning corpus (tasks 7, 8, stage 2), and for what."""
import re

import ml_collections

from sidjax.configs.rules import require
from sidjax.utils.redact import looks_like_secret

KINDS = ("offline", "openai")
SPLITS = ("train", "valid", "test")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _api_key_env_problem(value: str) -> str | None:
    """Why `value` is not an environment variable's name, never quoting it (it may be the key itself)."""
    if not value:
        return "must name the environment variable holding the API key"
    looks_like_key = looks_like_secret(value)
    if looks_like_key or not ENV_NAME.fullmatch(value):
        return ("must be the NAME of an environment variable (letters, digits, '_'), not the key: "
                "export the key, e.g. `export OPENAI_API_KEY=...`, and set api_key_env=OPENAI_API_KEY"
                + (" (the value given looks like a key; it is not shown, and it was not saved)" if looks_like_key else ""))
    return None



def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.kind = "offline"  # offline: deterministic template text, no network; openai: any OpenAI-compatible server
    # What the corpus covers: -1 = every item / sample, n = a seeded random subset of n.
    c.max_items = -1
    c.max_users = -1  # per split in user_splits
    # valid too, so reason_sft has a valid loss; the test split never needs teacher text.
    c.user_splits = ("train", "valid")
    c.seed = 0
    # True: the user-side reasoning explains the true next item (its kind and brand, never its SID), as
    # SIDReasoner's teacher is given it. False: the teacher is not shown it and reasons from the history to
    # the kind needed next (offline: from the train split's kind-to-kind counts), so a model can write at
    # inference the reasoning it trained on. The user narrative ends with the true next item either way.
    c.explain_target = True
    # Accepted answer length (characters); the LLM is asked for this range and re-asked outside it.
    c.min_chars = 80
    c.max_chars = 1500
    # openai only. The key is read from the environment variable named here, never from the config.
    c.base_url = "https://api.openai.com/v1"
    c.model = "gpt-4o-mini"
    c.api_key_env = "OPENAI_API_KEY"
    c.concurrency = 4
    c.timeout_s = 60.0
    c.max_retries = 6  # per request, on 429 / 5xx / timeouts / malformed bodies
    c.backoff_initial_s = 1.0  # doubles per retry (with jitter) up to backoff_max_s
    c.backoff_max_s = 60.0
    c.max_reasks = 2  # re-asks of an answer that fails its check
    c.max_requests = -1  # budget cap on HTTP requests, -1: none
    c.max_tokens = -1  # budget cap on prompt + completion tokens, -1: none
    c.temperature = 0.7
    c.max_output_tokens = 1024
    c.cache_path = ""  # JSONL answer cache; "" = cache.jsonl in the teacher stage's directory
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(c.kind in KINDS, f"{name}.kind", f"'{c.kind}' is not one of {KINDS}")
    require(c.max_items >= -1, f"{name}.max_items", "must be -1 (all) or >= 0")
    require(c.max_users >= -1, f"{name}.max_users", "must be -1 (all) or >= 0")
    require(
        len(c.user_splits) > 0 and all(s in SPLITS for s in c.user_splits) and len(set(c.user_splits)) == len(c.user_splits),
        f"{name}.user_splits",
        f"must be distinct names from {SPLITS}, got {tuple(c.user_splits)}",
    )
    require(0 < c.min_chars < c.max_chars, f"{name}.max_chars", "need 0 < min_chars < max_chars")
    # Checked whatever the kind: config.json records this value, so it must never be a key.
    problem = _api_key_env_problem(c.api_key_env)
    require(problem is None, f"{name}.api_key_env", problem or "")
    if c.kind != "openai":
        return
    require(c.base_url.startswith(("http://", "https://")), f"{name}.base_url", "is not an http(s) URL")
    require("@" not in c.base_url.split("/")[2], f"{name}.base_url",
            "must not hold credentials (user:key@host): the key comes from the variable named by api_key_env")
    require(bool(c.model), f"{name}.model", "must name the served model")
    require(c.concurrency >= 1, f"{name}.concurrency", "must be >= 1")
    require(c.timeout_s > 0, f"{name}.timeout_s", "must be > 0")
    require(c.max_retries >= 0, f"{name}.max_retries", "must be >= 0")
    require(0 <= c.backoff_initial_s <= c.backoff_max_s, f"{name}.backoff_initial_s", "need 0 <= backoff_initial_s <= backoff_max_s")
    require(c.max_reasks >= 0, f"{name}.max_reasks", "must be >= 0")
    require(c.max_requests >= -1, f"{name}.max_requests", "must be -1 (no cap) or >= 0")
    require(c.max_tokens >= -1, f"{name}.max_tokens", "must be -1 (no cap) or >= 0")
    require(c.temperature >= 0, f"{name}.temperature", "must be >= 0")
    require(c.max_output_tokens >= 1, f"{name}.max_output_tokens", "must be >= 1")
