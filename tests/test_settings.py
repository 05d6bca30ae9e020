"""Settings dataclasses filled from config sections by name, and library errors given their config key."""
from __future__ import annotations

import dataclasses
from typing import Mapping

import ml_collections
import pytest

from sidjax.configs import ConfigError, base_config
from sidjax.stages.settings import config_key, search_settings
from sidjax.train import grpo
from sidjax.utils.settings import settings_from


@dataclasses.dataclass(frozen=True)
class Example:
    steps: int
    weights: tuple[tuple[str, float], ...]
    schedule: tuple[float, ...]
    caps: Mapping[str, int]
    extra: str


def test_fields_come_from_keys_of_the_same_name_as_hashable_values():
    section = ml_collections.ConfigDict({"steps": 3, "weights": {"b": 2.0, "a": 1.0}, "schedule": [0.5, 1.0],
                                         "caps": {"x": -1}, "unused": 7})
    got = settings_from(Example, section, extra="given")
    assert got == Example(steps=3, weights=(("a", 1.0), ("b", 2.0)), schedule=(0.5, 1.0), caps={"x": -1},
                          extra="given")
    assert hash(got.weights) == hash((("a", 1.0), ("b", 2.0)))


def test_a_missing_key_or_an_unknown_extra_is_an_error():
    with pytest.raises(KeyError, match=r"Example needs \['caps', 'extra'\]"):
        settings_from(Example, {"steps": 1, "weights": {}, "schedule": []})
    with pytest.raises(TypeError, match=r"no fields \['stepz'\]"):
        settings_from(Example, {}, stepz=1)


def test_grpo_settings_read_every_knob_of_the_section():
    section = base_config().grpo
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=11)
    assert settings.group_size == section.group_size and settings.think_end_id == 11
    assert settings.reward_weights == tuple(sorted(section.reward_weights.to_dict().items()))
    assert settings.prefix_credit == tuple(section.prefix_credit)
    hash(settings)  # a static argument of the jitted step


def test_search_settings_sample_thinking_only_in_reasoning_mode():
    c = base_config().eval
    direct = search_settings(c)
    assert (direct.beams, direct.mode, direct.think) == (c.beams, c.mode, None)
    c.mode = "reasoning"
    think = search_settings(c).think
    assert think.max_new_tokens == c.max_think_tokens and think.temperature == c.think_temperature


def test_config_key_names_the_knob_behind_a_library_error():
    with pytest.raises(ConfigError, match=r"config key 'sids.rqvae.batch_size': batch size 6"):
        with config_key("sids.rqvae.batch_size", ValueError):
            raise ValueError("batch size 6 must be a multiple of the 4 batch shards")
    with pytest.raises(KeyError):  # other errors pass through unchanged
        with config_key("sids.rqvae.batch_size", ValueError):
            raise KeyError("x")
