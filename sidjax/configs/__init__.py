"""The one schema of every knob, assembled from one section per subsystem; no jax is imported here.

Experiment configs start from `base_config()` and override fields; `validate`
re-checks any config (also ones not built from the base) against the schema
and against each section's own value rules, so a typo or a wrong type fails
before any work starts, naming the key.

Top-level keys:
    name, seed         the run's name; the seed every stage starts from
    stages             the stage entries to run, in order: `name` or `name:tag` (e.g. `eval:sft`); a tag
                       only names an entry, so one stage can run several times
    redo               entries to run again although they finished
    entries            per-entry settings: `entries["<entry>"]` overrides knobs of its stage's section for
                       that entry alone, e.g. {"sft:b": {"seed_offset": 1}, "grpo:b": {"init_from": "sft:b"},
                       "eval:sft": {"models": ("sft",)}}; a stage's section holds the default of every entry.
                       Settings of an entry that config.stages does not list are unused (so the command line
                       can shorten the stages). On the command line:
                       "--config.entries['eval:sft'].models=('sft',)"
    <section>          one per subsystem (SECTIONS); model stages and eval entries say which earlier entries
                       they use (`init_from`, `models`, `rescore`), checked by `sidjax.stages.entries.check`
"""
from __future__ import annotations

from typing import Any, Callable

import ml_collections

from sidjax.configs import baselines, data, eval, mesh, model, rl, sft, sids, teacher
from sidjax.configs.rules import ConfigError, require

__all__ = ["ConfigError", "SECTIONS", "VALIDATORS", "base_config", "entry_key", "entry_section", "require",
           "stage_of", "validate"]

# Section name -> its defaults.
SECTIONS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "data": data.section,
    "sids": sids.section,
    "model": model.section,
    "teacher": teacher.section,
    "sft": sft.sft_section,
    "reason_sft": sft.reason_sft_section,
    "grpo": rl.grpo_section,
    "sdpo": rl.sdpo_section,
    "eval": eval.section,
    "mesh": mesh.section,
    "baselines": baselines.section,
}

# Section name -> its value rules, `check(section, config, key_prefix)`.
VALIDATORS: dict[str, Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict, str], None]] = {
    "data": data.validate,
    "sids": sids.validate,
    "model": model.validate,
    "teacher": teacher.validate,
    "sft": sft.validate,
    "reason_sft": sft.validate,
    "grpo": rl.validate,
    "sdpo": rl.validate,
    "eval": eval.validate,
    "mesh": mesh.validate,
    "baselines": baselines.validate,
}


def base_config() -> ml_collections.ConfigDict:
    """All knobs with their defaults; locked so that a misspelt key raises."""
    config = ml_collections.ConfigDict()
    config.name = "sidjax"
    config.seed = 0
    config.stages = ("data",)
    config.redo = ()
    config.entries = ml_collections.ConfigDict()
    for name, section in SECTIONS.items():
        config[name] = section()
    config.lock()
    return config


def _merged(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in saved.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def saved_config(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A run's saved config.json, with every knob it lacks at its default: a run written before
    sidjax had that knob behaved as its default does."""
    return ml_collections.ConfigDict(_merged(base_config().to_dict(), values))


def stage_of(entry: str) -> str:
    """The stage an entry runs: `eval` for `eval:sft`."""
    return entry.partition(":")[0]


def entry_key(entry: str) -> str:
    """How messages and the command line name `entry`'s overrides: entries["eval:sft"]."""
    return f'entries["{entry}"]'


def entry_section(config: ml_collections.ConfigDict, entry: str) -> ml_collections.ConfigDict:
    """The section `entry` runs with: its stage's section with `config.entries[entry]` laid over it."""
    section = config[stage_of(entry)].copy_and_resolve_references()
    if entry in config.entries:
        section.update(config.entries[entry])
    return section


# Sections whose keys are the user's names (one data section per domain of a mix) -> the schema of each value.
NAMED_SECTIONS: dict[str, Callable[[], ml_collections.ConfigDict]] = {"data.domains": data.domain}


def _check_schema(node: Any, schema: Any, path: str) -> None:
    if path in NAMED_SECTIONS:
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            raise ConfigError(f"config key '{path}' must be a section, got {type(node).__name__}")
        for key in node.keys():
            _check_schema(node[key], NAMED_SECTIONS[path](), f"{path}.{key}")
        return
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


def _check_entries(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict) -> None:
    """Each `entries[<entry>]` overrides known knobs of its stage's section."""
    for entry, overrides in config.entries.items():
        key = entry_key(entry)
        require(stage_of(entry) in SECTIONS, key, f"stage '{stage_of(entry)}' has no config section to override")
        _check_schema(overrides, schema[stage_of(entry)], key)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError on unknown keys, wrong types or bad values (the stage layer checks stage names)."""
    schema = base_config()
    _check_schema({k: v for k, v in config.items() if k != "entries"}, schema, "")
    require(isinstance(config.entries, (ml_collections.ConfigDict, dict)), "entries", "must be a section")
    _check_entries(config, schema)
    for spec in config.redo:
        require(spec in config.stages, "redo", f"'{spec}' is not in config.stages {tuple(config.stages)}")
    for name, check in VALIDATORS.items():
        if name in config:
            check(config[name], config, name)
    for entry in config.entries:
        name = stage_of(entry)
        merged = config.copy_and_resolve_references()
        merged[name] = entry_section(config, entry)
        VALIDATORS[name](merged[name], merged, entry_key(entry))
