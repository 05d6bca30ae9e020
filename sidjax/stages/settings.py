"""What the stages hand the library, built from their config sections, and library errors given their config key."""
from __future__ import annotations

import contextlib
from typing import Iterator

import ml_collections

from sidjax.configs import ConfigError
from sidjax.decode.sample import SamplingParams
from sidjax.eval.evaluate import SearchSettings
from sidjax.utils.settings import settings_from


def search_settings(c: ml_collections.ConfigDict) -> SearchSettings:
    """`config.eval` -> SearchSettings; reasoning mode samples its thinking with the `think_*` knobs."""
    think = None
    if c.mode == "reasoning":
        think = SamplingParams(max_new_tokens=c.max_think_tokens, temperature=c.think_temperature,
                               top_k=c.think_top_k, top_p=c.think_top_p,
                               repetition_penalty=c.think_repetition_penalty, no_repeat_ngram=c.think_no_repeat_ngram,
                               stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    return settings_from(SearchSettings, c, think=think)


@contextlib.contextmanager
def config_key(key: str, *errors: type[Exception]) -> Iterator[None]:
    """A library error of these types raised inside comes out as a ConfigError naming `key`, the knob behind it."""
    try:
        yield
    except errors as e:
        raise ConfigError(f"config key '{key}': {e}") from e
