"""The one schema of every knob, assembled from one section per subsystem.

Experiment configs start from `base_config()` and override fields; `validate`
re-checks any config (also ones not built from the base) against the schema
and against each section's own value rules, so a typo or a wrong type fails
before any work starts, naming the key.
"""
from __future__ import annotations

import importlib
from typing import Any

import ml_collections

# Section name -> module that owns it (each has `section()` and may have `validate(section, config)`).
SECTIONS: dict[str, str] = {
    "data": "sidjax.configs.data",
    "sids": "sidjax.configs.sids",
    "model": "sidjax.configs.model",
    "teacher": "sidjax.configs.teacher",
    "sft": "sidjax.configs.sft",
    "reason_sft": "sidjax.configs.sft",
    "grpo": "sidjax.configs.rl",
    "sdpo": "sidjax.configs.rl",
    "eval": "sidjax.configs.eval",
    "mesh": "sidjax.configs.mesh",
    "baselines": "sidjax.configs.baselines",
}


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending key."""


def _section(name: str) -> ml_collections.ConfigDict:
    module = importlib.import_module(SECTIONS[name])
    builder = getattr(module, f"{name}_section", None) or module.section
    return builder()


def base_config() -> ml_collections.ConfigDict:
    """All knobs with their defaults; locked so that a misspelt key raises."""
    config = ml_collections.ConfigDict()
    config.name = "sidjax"
    config.seed = 0
    config.stages = ("data",)
    config.redo = ()
    for name in SECTIONS:
        config[name] = _section(name)
    config.lock()
    return config


def _check_schema(node: Any, schema: Any, path: str) -> None:
    if isinstance(schema, ml_collections.ConfigDict):
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            raise ConfigError(f"config key '{path}' must be a section, got {type(node).__name__}")
        for key in node.keys():
            child = f"{path}.{key}" if path else key
            if key not in schema:
                known = ", ".join(sorted(schema.keys()))
                raise ConfigError(f"unknown config key '{child}' (known keys here: {known})")
            _check_schema(node[key], schema[key], child)
        return
    if schema is None or node is None:
        return
    expected = type(schema)
    if expected is float and isinstance(node, int) and not isinstance(node, bool):
        return
    if expected in (tuple, list) and isinstance(node, (tuple, list)):
        return
    if not isinstance(node, expected) or (expected is int and isinstance(node, bool)):
        raise ConfigError(
            f"config key '{path}' must be {expected.__name__}, got {type(node).__name__} ({node!r})"
        )


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError on unknown keys, wrong types or bad values."""
    from sidjax.stages import parse_stage, STAGES

    _check_schema(config, base_config(), "")
    for spec in config.stages:
        name, _ = parse_stage(spec)
        if name not in STAGES:
            raise ConfigError(f"config key 'stages': unknown stage '{spec}' (known: {', '.join(STAGES)})")
    for spec in config.redo:
        if spec not in config.stages:
            raise ConfigError(f"config key 'redo': '{spec}' is not in config.stages {tuple(config.stages)}")
    for name, module_name in SECTIONS.items():
        check = getattr(importlib.import_module(module_name), "validate", None)
        if check is not None and name in config:
            check(config[name], config, name)


def require(condition: bool, key: str, message: str) -> None:
    """Section validators call this so every message has the same shape."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")
