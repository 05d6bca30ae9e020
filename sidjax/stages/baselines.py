"""Stages `sasrec`, `markov` and `baselines`: dense item models of their own, and the same-split references.

`sasrec` tunes SASRec (`config.baselines.sasrec`) on valid and saves the chosen model
(`sidjax.baselines.sasrec.save`) with `fit.json` (its valid metrics, dropout, best epoch,
the tried settings, wall time), for `eval.rescore`. `markov` counts the item Markov chain
(`config.baselines.markov`) and saves it (`sidjax.baselines.markov.save`), for `eval.rescore`.

`baselines` writes `metrics.json` = {method: {split: {HR@K, NDCG@K, users}, "hit": "sid" | "item",
"item_level": {split: ...}, ...}} and `ranks_<method>.npz` (per-sample ranks, for the report's
bootstrap). With a `sids` entry in the run, the split metrics are on the SID models' yardstick
(`sidjax.baselines.score`: each SID counts once, at its first item); `item_level` keeps the
target-item-only figures. SASRec also records the fit above (its valid metrics stay in `fit.json`).
When the run has a `sasrec` (`markov`, `sids`) entry (its first one, listed before `baselines`:
`sidjax.stages.entries` checks it at launch), the stage scores that entry's saved model instead of
fitting the same one again (and records `from_stage`); otherwise it fits its own, SASRec with
per-epoch curves in `metrics.jsonl` (prefix `sasrec/`). A killed SASRec fit resumes
after its last finished epoch from `sasrec_resume/` (SIGTERM: after the current epoch, with `Preempted`).
"""
from __future__ import annotations

import json
import shutil
import time
from typing import Any

import jax
import numpy as np

from sidjax.baselines import markov, popularity, ranking_depth, sasrec, score, sid_groups
from sidjax.stages import sids as sids_stage
from sidjax.stages.context import first_entry
from sidjax.utils.ranking import format_table, write_ranks

METRICS_FILE = "metrics.json"
FIT_FILE = "fit.json"
# SASRec's per-epoch state (sidjax.baselines.sasrec): a killed stage resumes from it; removed once the stage's
# outputs are written (a kill after that retrains from the start, to the same model).
RESUME_DIR = "sasrec_resume"


def _tune_sasrec(ctx) -> tuple[sasrec.SasRec, dict[str, Any]]:
    """The valid-tuned SASRec and its fit summary (valid metrics, dropout, epochs, trials, seconds)."""
    c = ctx.config.baselines
    data = ctx.dataset
    start = time.time()
    best, trials = sasrec.tune(data.splits["train"], data.splits["valid"], data.num_items, c.sasrec, c.topk,
                               c.eval_batch_size, writer=ctx.writer, resume_dir=ctx.dir / RESUME_DIR)
    fit = {"valid": best.valid, "dropout": best.dropout, "best_epoch": best.best_epoch, "epochs": best.epochs,
           "trials": trials, "seconds": round(time.time() - start, 1)}
    return best.model, fit


def run_sasrec(ctx) -> dict[str, Any]:
    model, fit = _tune_sasrec(ctx)
    sasrec.save(model, ctx.dir, fit["best_epoch"])
    if jax.process_index() == 0:
        (ctx.dir / FIT_FILE).write_text(json.dumps(fit, indent=2), encoding="utf-8")
        shutil.rmtree(ctx.dir / RESUME_DIR, ignore_errors=True)
    return fit


def run_markov(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    chain = markov.fit(ctx.dataset.splits["train"], ctx.dataset.num_items, c.markov)
    markov.save(chain, ctx.dir)
    return {"valid": chain.evaluate(ctx.dataset.splits["valid"], c.topk, c.eval_batch_size),
            "transitions": int(chain.counts.sum())}


def _sid_groups(ctx):
    """Per item, its SID's id, from the run's `sids` entry (the yardstick of the SID models); None without one."""
    entry = first_entry(ctx.config, "sids")
    return None if entry is None else sid_groups(sids_stage.load_output(ctx.output_of(entry))[0])


def _sasrec_results(ctx, depth: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    c = ctx.config.baselines
    entry = first_entry(ctx.config, "sasrec")
    if entry is None:
        model, fit = _tune_sasrec(ctx)
    else:
        source = ctx.output_of(entry)
        model = sasrec.load(source)
        fit = {**json.loads((source / FIT_FILE).read_text(encoding="utf-8")), "from_stage": entry}
    tops = {s: sasrec.top_items(model, ctx.dataset.splits[s], depth, c.eval_batch_size) for s in c.splits}
    return {k: v for k, v in fit.items() if k != "valid"}, tops


def _markov_results(ctx, depth: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    c = ctx.config.baselines
    data = ctx.dataset
    entry = first_entry(ctx.config, "markov")
    if entry is None:
        chain, source = markov.fit(data.splits["train"], data.num_items, c.markov), {}
    else:
        chain, source = markov.load(ctx.output_of(entry)), {"from_stage": entry}
    return source, {s: chain.top_items(data.splits[s], depth, c.eval_batch_size) for s in c.splits}


def _popularity_results(ctx, depth: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    data = ctx.dataset
    top = popularity.ranking(popularity.train_counts(data.splits["train"], data.num_items))[:depth]
    return {}, {s: np.broadcast_to(top, (len(data.splits[s]), depth)) for s in ctx.config.baselines.splits}


_METHODS = {"popularity": _popularity_results, "sasrec": _sasrec_results, "markov": _markov_results}


def run(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    groups = _sid_groups(ctx)
    depth = ranking_depth(c.topk, groups)
    results: dict[str, Any] = {}
    ranks: dict[str, dict[str, np.ndarray]] = {}
    for method in [m for m in _METHODS if m in c.methods]:
        extra, tops = _METHODS[method](ctx, depth)
        scored = {s: score(top, ctx.dataset.splits[s].target, c.topk, groups) for s, top in tops.items()}
        level = next(iter(scored.values())).level
        results[method] = {**{s: r.metrics for s, r in scored.items()}, "hit": level,
                           "item_level": {s: r.item_level for s, r in scored.items()}, **extra}
        ranks[method] = {s: r.ranks for s, r in scored.items()}
    tables = [f"{method} / {split} ({int(r[split]['users'])} samples, {r['hit']} level):\n"
              f"{format_table(r[split], c.topk)}" for method, r in results.items() for split in c.splits]
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        for method, by_split in ranks.items():
            write_ranks(ctx.dir / ranks_file(method), by_split)
        (ctx.dir / METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
        shutil.rmtree(ctx.dir / RESUME_DIR, ignore_errors=True)
    return results


def ranks_file(method: str) -> str:
    """The per-sample ranks of one method, {split: ranks} (`sidjax.utils.ranking.write_ranks`)."""
    return f"ranks_{method}.npz"
