"""What a stage entry sees when it runs: its own settings, its directory, the data, earlier entries' outputs.

An entry runs with its stage's config section overridden by `config.entries[<entry>]`
(`sidjax.configs.entry_section`) and, for a model stage, with seed `config.seed + seed_offset`.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import ml_collections

from sidjax.configs import entry_section, stage_of
from sidjax.data.dataset import RecDataset
from sidjax.data.mix import restrict
from sidjax.utils.errors import DataError
from sidjax.utils.metrics import MetricsWriter

DONE = "DONE.json"
# Stages whose output is a model checkpoint that later stages continue from (their sections have `init_from`).
MODEL_STAGES = ("sft", "reason_sft", "grpo", "sdpo")


def read_done(directory: Path, spec: str) -> dict:
    """The `DONE.json` record ({"seconds", "summary"}) of finished entry `spec`; a damaged one is a clear error."""
    path = directory / DONE
    redo = f"add '{spec}' to config key 'redo' to run that stage again"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"is damaged ({e}); {redo}") from None
    if not isinstance(record, dict) or "summary" not in record:
        raise DataError(path, f"is damaged (not a record with a 'summary'); {redo}")
    return record


def parse_stage(spec: str) -> tuple[str, str]:
    """`eval:sft` -> ("eval", "sft"); the tag only names the entry."""
    name, _, tag = spec.partition(":")
    return name, tag


def stage_dirname(spec: str) -> str:
    return spec.replace(":", "_")


def first_entry(config: ml_collections.ConfigDict, stage: str) -> str | None:
    """The first entry of `stage` in config.stages (the one `baselines` reuses), if any."""
    return next((s for s in config.stages if stage_of(s) == stage), None)


def entry_config(config: ml_collections.ConfigDict, spec: str) -> ml_collections.ConfigDict:
    """The config `spec` runs with: its section's entry overrides applied, its lineage's seed set."""
    name = stage_of(spec)
    if name not in config:
        return config
    resolved = config.copy_and_resolve_references()
    resolved[name] = entry_section(config, spec)
    resolved.seed = config.seed + resolved[name].get("seed_offset", 0)
    return resolved


@functools.lru_cache(maxsize=None)
def load_dataset_cached(data_json: str, domains: tuple[str, ...] = ()) -> RecDataset:
    """The dataset of a `config.data` section (as JSON), or the view of some of its domains (a mix)."""
    if domains:
        return restrict(load_dataset_cached(data_json), domains)
    from sidjax.data.sources import load_dataset

    return load_dataset(ml_collections.ConfigDict(json.loads(data_json)))


class StageContext:
    """What a stage sees: the entry's config, its own directory, the data, earlier stages' outputs."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, spec: str):
        self.workdir = workdir
        self.spec = spec
        self.name, self.tag = parse_stage(spec)
        self.config = entry_config(config, spec)
        self.dir = workdir / stage_dirname(spec)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._writer: MetricsWriter | None = None

    @property
    def dataset(self) -> RecDataset:
        """The run's data; a model stage entry with `domains` set sees those domains' view of a mix."""
        domains = tuple(self.config[self.name].domains) if self.name in MODEL_STAGES else ()
        return load_dataset_cached(self.config.data.to_json(), domains)

    @property
    def writer(self) -> MetricsWriter:
        if self._writer is None:
            self._writer = MetricsWriter(self.dir)
        return self._writer

    def output_of(self, spec: str) -> Path:
        """Directory of an earlier, finished stage entry."""
        d = self.workdir / stage_dirname(spec)
        if not (d / DONE).exists():
            raise FileNotFoundError(
                f"stage '{self.spec}' needs the output of stage '{spec}', which has not finished in {self.workdir}"
            )
        read_done(d, spec)
        return d

    def init_from(self) -> str | None:
        """The model stage entry this model stage continues (its `init_from`); None: it builds a fresh model."""
        return self.config[self.name].init_from or None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
