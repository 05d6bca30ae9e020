"""Run a config's stage entries in order, each once: a finished entry is skipped on the next launch.

Each entry owns `workdir/<entry with : -> _>/`; a finished one wrote `DONE.json` there and runs
again only when it is in `config.redo`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from sidjax.stages import entries
from sidjax.stages.context import DONE, StageContext, read_done
from sidjax.stages.registry import STAGES


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
    entries.check(config)
    workdir = Path(workdir)
    save_resolved_config(config, workdir)
    summaries = {}
    for spec in config.stages:
        ctx = StageContext(config, workdir, spec)
        done = ctx.dir / DONE
        if done.exists() and spec not in config.redo:
            logging.info("stage %s: already done in %s (add it to config.redo to run it again)", spec, ctx.dir)
            summaries[spec] = read_done(ctx.dir, spec)["summary"]
            continue
        if done.exists():
            done.unlink()
        logging.info("stage %s: running in %s", spec, ctx.dir)
        start = time.time()
        try:
            summary = STAGES[ctx.name](ctx) or {}
        finally:
            ctx.close()
        seconds = round(time.time() - start, 2)
        logging.info("stage %s: done in %.1fs", spec, seconds)
        if jax.process_index() == 0:
            _write_atomic(done, json.dumps({"seconds": seconds, "summary": summary}, indent=2, default=str))
        summaries[spec] = summary
    return summaries
