"""The launch check of `config.stages`: known stages, and every entry uses only entries listed before it.

What an entry uses is its own setting (`sidjax.configs`): a model stage continues `init_from`, an
`eval` entry scores `models` and re-scores with `rescore` (the saved beams of the eval entry
`beams_from`, when set), and `baselines` scores the run's first `sasrec` / `markov` entry when there
is one, at the level of the SIDs of its first `sids` entry.
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
        if c.beams_from:
            _require_before(config, spec, "beams_from", c.beams_from, before, ("eval",))
            _check_beams_source(config, spec, c, c.beams_from)
    elif name == "baselines":
        for method in sorted(set(config.baselines.methods) & set(SCORERS)):
            entry = first_entry(config, method)
            require(entry is None or entry in before, "stages",
                    f"'{spec}' scores the model of '{entry}', which must be listed before it")
        sids = first_entry(config, "sids")
        require(sids is None or sids in before, "stages",
                f"'{spec}' scores at SID level with the SIDs of '{sids}', which must be listed before it")


# What a search's beams depend on: an eval entry re-scoring another's saved beams must share these (the batch
# size too: the dense models then score the batches the search would have given them).
_SEARCH_KNOBS = ("checkpoint", "models", "beams", "normalize", "prompt_bucket", "batch_size", "step", "max_users",
                 "domains")


def _check_beams_source(config: ml_collections.ConfigDict, spec: str, c: ml_collections.ConfigDict,
                        source_spec: str) -> None:
    source = entry_section(config, source_spec)
    key = _key(config, spec, "beams_from")
    require(config.data.source != "mix", key, "re-scoring saved beams of a mix of domains is not supported; "
            "leave it empty to search")
    require(source.mode == "direct" and not source.rescore and source.write_samples, key,
            f"'{source_spec}' must be a direct-mode eval without re-scoring that writes its samples (mode "
            f"{source.mode}, rescore {tuple(source.rescore)}, write_samples {source.write_samples})")
    differ = [f"{knob} {c[knob]!r} vs {source[knob]!r}" for knob in _SEARCH_KNOBS
              if _value(c[knob]) != _value(source[knob])]
    require(not differ, key, f"re-scores the beams of '{source_spec}', whose search differs: {'; '.join(differ)}")
    missing = [split for split in c.splits if split not in source.splits]
    require(not missing, key, f"'{source_spec}' did not evaluate the split(s) {tuple(missing)}")


def _value(knob: object) -> object:
    """A knob's value with lists and tuples alike (a config file writes tuples, a saved config lists)."""
    return tuple(knob) if isinstance(knob, (list, tuple)) else knob


def check(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError, naming the key, when an entry's stage is unknown or it uses an entry not listed before it."""
    stages = tuple(config.stages)
    for spec in stages:
        if stage_of(spec) not in STAGES:
            raise ConfigError(f"config key 'stages': unknown stage '{spec}' (known: {', '.join(STAGES)})")
    require(len(set(stages)) == len(stages), "stages", f"lists an entry twice: {stages}")
    for position, spec in enumerate(stages):
        _check_entry(config, spec, stages[:position])
