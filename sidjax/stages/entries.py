"""The launch check of `config.stages`: known stages, and every entry uses only entries listed before it.

What an entry uses is its own setting (`sidjax.configs`): a model stage continues `init_from`, an
`eval` entry scores `models` and re-scores with `rescore`, and `baselines` scores the run's first
`sasrec` / `markov` entry when there is one, at the level of the SIDs of its first `sids` entry.
Order matters only in that an entry may use the outputs of entries listed before it. Messages name
the key that set the value: `entries["<entry>"].<knob>` when the entry overrides it, else
`<stage>.<knob>`.
"""
from __future__ import annotations

import ml_collections

from sidjax.configs import ConfigError, entry_key, entry_section, require, stage_of
from sidjax.eval.rescore import SCORERS
from sidjax.stages.context import first_entry
from sidjax.stages.registry import MODEL_STAGES, STAGES


def _key(config: ml_collections.ConfigDict, spec: str, knob: str) -> str:
    overrides = config.entries.get(spec)
    return f"{entry_key(spec)}.{knob}" if overrides is not None and knob in overrides else f"{stage_of(spec)}.{knob}"


def _require_before(config, spec: str, knob: str, used: str, before: tuple[str, ...], kinds: tuple[str, ...]) -> None:
    require(used in before and stage_of(used) in kinds, _key(config, spec, knob),
            f"'{used}' is not a {' / '.join(kinds)} entry listed before '{spec}' in config.stages "
            f"{tuple(config.stages)}")


def _check_entry(config: ml_collections.ConfigDict, spec: str, before: tuple[str, ...]) -> None:
    name = stage_of(spec)
    if name in MODEL_STAGES:
        source = entry_section(config, spec).init_from
        if source:
            _require_before(config, spec, "init_from", source, before, MODEL_STAGES)
    elif name == "eval":
        c = entry_section(config, spec)
        if not c.checkpoint:
            for model in c.models:
                _require_before(config, spec, "models", model, before, MODEL_STAGES)
        for scorer in c.rescore:
            _require_before(config, spec, "rescore", scorer, before, tuple(SCORERS))
    elif name == "baselines":
        for method in sorted(set(config.baselines.methods) & set(SCORERS)):
            entry = first_entry(config, method)
            require(entry is None or entry in before, "stages",
                    f"'{spec}' scores the model of '{entry}', which must be listed before it")
        sids = first_entry(config, "sids")
        require(sids is None or sids in before, "stages",
                f"'{spec}' scores at SID level with the SIDs of '{sids}', which must be listed before it")


def check(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError, naming the key, when an entry's stage is unknown or it uses an entry not listed before it."""
    stages = tuple(config.stages)
    for spec in stages:
        if stage_of(spec) not in STAGES:
            raise ConfigError(f"config key 'stages': unknown stage '{spec}' (known: {', '.join(STAGES)})")
    require(len(set(stages)) == len(stages), "stages", f"lists an entry twice: {stages}")
    for position, spec in enumerate(stages):
        _check_entry(config, spec, stages[:position])
