"""Stages `sasrec` and `baselines`: SASRec as a model of its own, and the same-split reference recommenders.

`sasrec` tunes SASRec (`config.baselines.sasrec`) on valid and saves the chosen model
(`sidjax.baselines.sasrec.save`) with `fit.json` (its valid metrics, dropout, best epoch,
the tried settings, wall time), for `eval.rescore`.

`baselines` writes `metrics.json` = {method: {split: {HR@K, NDCG@K, users}, ...}}; SASRec
also records the fit above. When the run lists a `sasrec` entry before it, the stage scores
that entry's saved model instead of training the same one again; otherwise it tunes its own,
with per-epoch curves in `metrics.jsonl` (prefix `sasrec/`).
"""
from __future__ import annotations

import json
import time
from typing import Any

import jax

from sidjax.baselines import popularity, sasrec
from sidjax.eval.metrics import format_table
from sidjax.stages import parse_stage

METRICS_FILE = "metrics.json"
FIT_FILE = "fit.json"


def _tune_sasrec(ctx) -> tuple[sasrec.SasRec, dict[str, Any]]:
    """The valid-tuned SASRec and its fit summary (valid metrics, dropout, epochs, trials, seconds)."""
    c = ctx.config.baselines
    data = ctx.dataset
    start = time.time()
    best, trials = sasrec.tune(data.splits["train"], data.splits["valid"], data.num_items, c.sasrec, c.topk,
                               c.eval_batch_size, writer=ctx.writer)
    fit = {"valid": best.valid, "dropout": best.dropout, "best_epoch": best.best_epoch, "epochs": best.epochs,
           "trials": trials, "seconds": round(time.time() - start, 1)}
    return best.model, fit


def run_sasrec(ctx) -> dict[str, Any]:
    model, fit = _tune_sasrec(ctx)
    sasrec.save(model, ctx.dir, fit["best_epoch"])
    if jax.process_index() == 0:
        (ctx.dir / FIT_FILE).write_text(json.dumps(fit, indent=2), encoding="utf-8")
    return fit


def _earlier_sasrec_entry(ctx) -> str | None:
    stages = list(ctx.config.stages)
    before = stages[: stages.index(ctx.spec)]
    return next((s for s in before if parse_stage(s)[0] == "sasrec"), None)


def _sasrec_results(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    data = ctx.dataset
    entry = _earlier_sasrec_entry(ctx)
    if entry is None:
        model, fit = _tune_sasrec(ctx)
    else:
        source = ctx.output_of(entry)
        model = sasrec.load(source)
        fit = {**json.loads((source / FIT_FILE).read_text(encoding="utf-8")), "from_stage": entry}
    scored = {s: fit["valid"] if s == "valid" else sasrec.evaluate(model, data.splits[s], c.topk, c.eval_batch_size)
              for s in c.splits}
    return {**scored, **{k: v for k, v in fit.items() if k != "valid"}}


def run(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    data = ctx.dataset
    results: dict[str, Any] = {}
    if "popularity" in c.methods:
        counts = popularity.train_counts(data.splits["train"], data.num_items)
        results["popularity"] = {s: popularity.evaluate(counts, data.splits[s], c.topk) for s in c.splits}
    if "sasrec" in c.methods:
        results["sasrec"] = _sasrec_results(ctx)
    tables = [f"{method} / {split} ({int(r[split]['users'])} samples):\n{format_table(r[split], c.topk)}"
              for method, r in results.items() for split in c.splits]
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        (ctx.dir / METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results
