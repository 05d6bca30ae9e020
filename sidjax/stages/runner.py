"""Run a config's stage entries in order, each once: a finished entry is skipped on the next launch.

Each entry owns `workdir/<entry with : -> _>/`; a finished one wrote `DONE.json` there (with the
config keys it was made with, `sidjax.stages.fingerprint`) and runs again only when it is in
`config.redo`. Before any entry runs: the workdir is locked (`sidjax.stages.lock`), a relaunch whose
config changed for a finished entry is refused, and the checks that need the data run
(`sidjax.stages.launch_checks`); only then is `config.json` written.
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

from sidjax.stages import entries, fingerprint, launch_checks
from sidjax.stages.context import DONE, StageContext, read_done, stage_dirname
from sidjax.stages.lock import workdir_lock
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
    with workdir_lock(workdir):
        fingerprint.check_relaunch(config, workdir)
        to_run = [s for s in config.stages if s in config.redo or not (workdir / stage_dirname(s) / DONE).exists()]
        launch_checks.check(config, workdir, to_run)
        save_resolved_config(config, workdir)
        return _run_entries(config, workdir)


def _run_entries(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, dict[str, Any]]:
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
            inputs = fingerprint.inputs(config, spec)
            record = {"seconds": seconds, "summary": summary, "fingerprint": fingerprint.fingerprint(inputs),
                      "inputs": inputs}
            _write_atomic(done, json.dumps(record, indent=2, default=str))
        summaries[spec] = summary
    return summaries
