"""The pipeline's stages, registered in one place, and the runner that resumes them.

A stage is `run(ctx: StageContext) -> dict` in its own module. A stage entry in
`config.stages` is `name` or `name:tag` (e.g. `eval:after_sft`), so one stage
can run several times; each entry owns `workdir/<entry with : -> _>/`. A stage
that finished wrote `DONE.json` there and is skipped on the next launch unless
its entry is in `config.redo`.

A model stage's tag names its lineage: `sft:b` starts a model of its own (with seed
`config.seed + k` for the k-th tagged lineage in `config.stages`), and `grpo:b`
continues from it, while untagged model stages continue from untagged ones. So
one config can train several models, e.g. the members of an `eval.ensemble`.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
from absl import logging

from sidjax.data.dataset import RecDataset
from sidjax.utils.metrics import MetricsWriter

# stage name -> "module:function"
STAGES: dict[str, str] = {
    "data": "sidjax.stages.data:run",
    "sids": "sidjax.stages.sids:run",
    "teacher": "sidjax.stages.teacher:run",
    "sft": "sidjax.stages.sft:run_alignment",
    "reason_sft": "sidjax.stages.sft:run_reasoning",
    "grpo": "sidjax.stages.rl:run_grpo",
    "sdpo": "sidjax.stages.rl:run_sdpo",
    "eval": "sidjax.stages.eval:run",
    "sasrec": "sidjax.stages.baselines:run_sasrec",
    "markov": "sidjax.stages.baselines:run_markov",
    "baselines": "sidjax.stages.baselines:run",
}

# Stages whose output is a model checkpoint that later stages continue from.
MODEL_STAGES = ("sft", "reason_sft", "grpo", "sdpo")

DONE = "DONE.json"


def parse_stage(spec: str) -> tuple[str, str]:
    name, _, tag = spec.partition(":")
    return name, tag


def lineage_tags(stages) -> list[str]:
    """The tags of tagged model stages, in order of first appearance: one lineage (model) each."""
    tags = []
    for spec in stages:
        name, tag = parse_stage(spec)
        if name in MODEL_STAGES and tag and tag not in tags:
            tags.append(tag)
    return tags


def stage_dirname(spec: str) -> str:
    return spec.replace(":", "_")


@functools.lru_cache(maxsize=None)
def _load_dataset_cached(data_json: str) -> RecDataset:
    from sidjax.data.sources import load_dataset

    return load_dataset(ml_collections.ConfigDict(json.loads(data_json)))


class StageContext:
    """What a stage sees: the config, its own directory, the data, earlier stages' outputs."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, spec: str):
        self.workdir = workdir
        self.spec = spec
        self.name, self.tag = parse_stage(spec)
        if self.name in MODEL_STAGES and self.tag:
            config = config.copy_and_resolve_references()
            config.seed = config.seed + 1 + lineage_tags(config.stages).index(self.tag)
        self.config = config
        self.dir = workdir / stage_dirname(spec)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._writer: MetricsWriter | None = None

    @property
    def dataset(self) -> RecDataset:
        return _load_dataset_cached(self.config.data.to_json())

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
        return d

    def latest_model_stage(self) -> str | None:
        """The last model stage listed before this one (of this lineage, for a model stage), if any."""
        stages = list(self.config.stages)
        before = stages[: stages.index(self.spec)]
        models = [s for s in before if parse_stage(s)[0] in MODEL_STAGES]
        if self.name in MODEL_STAGES:
            models = [s for s in models if parse_stage(s)[1] == self.tag]
        return models[-1] if models else None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def stage_function(name: str) -> Callable[[StageContext], dict[str, Any]]:
    module_name, _, fn = STAGES[name].partition(":")
    return getattr(importlib.import_module(module_name), fn)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_resolved_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_atomic(workdir / "config.json", config.to_json_best_effort(indent=2, sort_keys=True))


def run_pipeline(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Run `config.stages` in order, skipping finished ones; returns each stage's summary."""
    workdir = Path(workdir)
    save_resolved_config(config, workdir)
    summaries = {}
    for spec in config.stages:
        ctx = StageContext(config, workdir, spec)
        done = ctx.dir / DONE
        if done.exists() and spec not in config.redo:
            logging.info("stage %s: already done in %s (add it to config.redo to run it again)", spec, ctx.dir)
            summaries[spec] = json.loads(done.read_text(encoding="utf-8"))["summary"]
            continue
        if done.exists():
            done.unlink()
        logging.info("stage %s: running in %s", spec, ctx.dir)
        start = time.time()
        try:
            summary = stage_function(ctx.name)(ctx) or {}
        finally:
            ctx.close()
        seconds = round(time.time() - start, 2)
        logging.info("stage %s: done in %.1fs", spec, seconds)
        if jax.process_index() == 0:
            _write_atomic(done, json.dumps({"seconds": seconds, "summary": summary}, indent=2, default=str))
        summaries[spec] = summary
    return summaries
