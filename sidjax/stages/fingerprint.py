"""What a finished entry was made with, and the relaunch check that refuses a changed config.

A finished entry's DONE.json records `inputs`: the resolved config keys the entry depends on, flat
(`data.max_history`: 10, ...), and `fingerprint`, their hash. The rule, kept conservative:

    every entry    config.seed, the `data` section, and its own section with `config.entries[<entry>]`
                   laid over it (named `<stage>.<knob>`; `sasrec` / `markov` read `baselines`)
    model stages   + the `model` section; `sids` + `model` when `sids.embed.method` is lm_mean_pool

Not inputs: `name`, `stages`, `redo`, `entries` of other entries, `mesh` (how devices are laid out,
not what is computed), and other stages' sections: what an entry takes from another entry comes
through that entry's outputs, so it is covered by the downstream rule: an entry that uses the
outputs (`uses`) of an entry that runs now must run again too.

On relaunch, a finished entry not in `config.redo` whose inputs differ, or which uses an entry that
runs now, stops the launch (a key the entry's record lacks does not count when it holds its default:
sidjax added that knob after the entry was made, and a new knob's default keeps the old behaviour) with one message naming the keys, the entries and the `config.redo` that
accepts it (or use a new workdir).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections
from absl import logging

from sidjax.configs import ConfigError, base_config, entry_section, stage_of
from sidjax.stages.context import DONE, MODEL_STAGES, first_entry, read_done, stage_dirname

# Stages whose outputs a model stage reads, by their entry name (`ctx.output_of("sids")`).
_MODEL_STAGE_READS = ("sids", "teacher")


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, Mapping):
        out = {}
        for key in sorted(node):
            out.update(_flat(node[key], f"{prefix}.{key}"))
        return out
    return {prefix: list(node) if isinstance(node, tuple) else node}


def inputs(config: ml_collections.ConfigDict, spec: str) -> dict[str, Any]:
    """The resolved config keys entry `spec` depends on, flat and JSON-plain (see the module docstring)."""
    stage = stage_of(spec)
    resolved = config.copy_and_resolve_references()
    sections = ["data"]
    if stage in MODEL_STAGES or (stage == "sids" and resolved.sids.embed.method == "lm_mean_pool"):
        sections.append("model")
    out: dict[str, Any] = {"seed": resolved.seed}
    for name in sections:
        out.update(_flat(resolved[name].to_dict(), name))
    if stage in ("sasrec", "markov"):
        out.update(_flat(resolved.baselines.to_dict(), "baselines"))
    elif stage in resolved and stage not in sections:
        out.update(_flat(entry_section(config, spec).to_dict(), stage))
    return json.loads(json.dumps(out, default=str))


def fingerprint(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def uses(config: ml_collections.ConfigDict, spec: str) -> tuple[str, ...]:
    """The entries of config.stages whose outputs `spec` reads."""
    stage, listed = stage_of(spec), tuple(config.stages)
    c = entry_section(config, spec) if stage in config else None
    if stage in MODEL_STAGES:
        used = [s for s in _MODEL_STAGE_READS if s in listed] + ([c.init_from] if c.init_from else [])
    elif stage == "teacher":
        used = ["sids"]
    elif stage == "eval":
        used = ([] if c.checkpoint else list(c.models)) + list(c.rescore) + ([c.beams_from] if c.beams_from else [])
    elif stage == "baselines":
        used = [first_entry(config, method) for method in ("sids", "sasrec", "markov")]
    else:
        used = []
    return tuple(u for u in used if u and u in listed and u != spec)


def recorded_inputs(done: Path, spec: str) -> dict[str, Any] | None:
    """The inputs a finished entry's DONE.json recorded; None for one written before they were recorded."""
    return read_done(done.parent, spec).get("inputs")


def _shown(values: Mapping[str, Any], key: str) -> str:
    return repr(values[key]) if key in values else "(unset)"


def _defaults() -> dict[str, Any]:
    """Every section knob's default, flat and JSON-plain as `inputs` records them."""
    defaults = base_config()
    out = {}
    for name, section in defaults.items():
        if isinstance(section, ml_collections.ConfigDict) and name != "entries":
            out.update(_flat(section.to_dict(), name))
    return json.loads(json.dumps(out, default=str))


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """'key old -> new' for each key that differs; a key `old` lacks is a change only away from its default."""
    def differs(key: str) -> bool:
        if key in old and key in new:
            return old[key] != new[key]
        if key in new:  # a knob added since the entry was made
            return key not in defaults or new[key] != defaults[key]
        return True

    return [f"{key} {_shown(old, key)} -> {_shown(new, key)}" for key in sorted(set(old) | set(new)) if differs(key)]


def check_relaunch(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Refuse (ConfigError) when a finished entry that would be kept was made with other inputs, or uses the
    outputs of an entry that runs now."""
    stages: Sequence[str] = tuple(config.stages)
    changed: dict[str, list[str]] = {}
    stale: dict[str, list[str]] = {}
    runs = set()
    defaults = _defaults()
    for spec in stages:
        done = workdir / stage_dirname(spec) / DONE
        if not done.exists() or spec in config.redo:
            runs.add(spec)
            continue
        old = recorded_inputs(done, spec)
        if old is None:
            logging.warning("stage %s: %s records no config (written before fingerprints); taken as made with this "
                            "one", spec, done)
        diff = [] if old is None else _changes(old, inputs(config, spec), defaults)
        upstream = [u for u in uses(config, spec) if u in runs or u in changed or u in stale]
        if diff:
            changed[spec] = diff
        elif upstream:
            stale[spec] = upstream
    if changed or stale:
        redo = tuple(s for s in stages if s in config.redo or s in changed or s in stale)
        raise ConfigError(f"workdir {workdir} holds finished entries made with another config: "
                          f"{_reasons(changed, stale)}. Redo them with --config.redo=\"{redo!r}\", or use a new "
                          f"--workdir")


def _reasons(changed: Mapping[str, list[str]], stale: Mapping[str, list[str]]) -> str:
    """'key old -> new (affects entries)' per changed key, then 'entry uses entries, which run again'."""
    by_change: dict[str, list[str]] = {}
    for spec, diff in changed.items():
        for change in diff:
            by_change.setdefault(change, []).append(spec)
    parts = [f"{change} (affects {', '.join(specs)})" for change, specs in by_change.items()]
    parts += [f"'{spec}' uses {', '.join(repr(u) for u in upstream)}, which {'runs' if len(upstream) == 1 else 'run'}"
              f" again" for spec, upstream in stale.items()]
    return "; ".join(parts)
