"""Stages `sasrec`, `markov` and `baselines`: dense item models of their own, and the same-split references.

`sasrec` tunes SASRec (`config.baselines.sasrec`) on valid and saves the chosen model
(`sidjax.baselines.sasrec.save`) with `fit.json` (its valid metrics, dropout, best epoch,
the tried settings, wall time), for `eval.rescore`. `markov` counts the item Markov chain
(`config.baselines.markov`) and saves it (`sidjax.baselines.markov.save`), for `eval.rescore`.

`baselines` writes `metrics.json` = {method: {split: {HR@K, NDCG@K, users}, ...}}; SASRec
also records the fit above. When the run has a `sasrec` (`markov`) entry (its first one, listed
before `baselines`: `sidjax.stages.entries` checks it at launch), the stage scores that entry's saved
model instead of fitting the same one again (and records `from_stage`); otherwise it fits its own,
SASRec with per-epoch curves in `metrics.jsonl` (prefix `sasrec/`). A killed SASRec fit resumes
after its last finished epoch from `sasrec_resume/` (SIGTERM: after the current epoch, with `Preempted`).
"""
from __future__ import annotations

import json
import shutil
import time
from typing import Any

import jax

from sidjax.baselines import markov, popularity, sasrec
from sidjax.stages.context import first_entry
from sidjax.utils.ranking import format_table

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


def _sasrec_results(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    data = ctx.dataset
    entry = first_entry(ctx.config, "sasrec")
    if entry is None:
        model, fit = _tune_sasrec(ctx)
    else:
        source = ctx.output_of(entry)
        model = sasrec.load(source)
        fit = {**json.loads((source / FIT_FILE).read_text(encoding="utf-8")), "from_stage": entry}
    scored = {s: fit["valid"] if s == "valid" else sasrec.evaluate(model, data.splits[s], c.topk, c.eval_batch_size)
              for s in c.splits}
    return {**scored, **{k: v for k, v in fit.items() if k != "valid"}}


def _markov_results(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    data = ctx.dataset
    entry = first_entry(ctx.config, "markov")
    if entry is None:
        chain, source = markov.fit(data.splits["train"], data.num_items, c.markov), {}
    else:
        chain, source = markov.load(ctx.output_of(entry)), {"from_stage": entry}
    return {**{s: chain.evaluate(data.splits[s], c.topk, c.eval_batch_size) for s in c.splits}, **source}


def run(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    data = ctx.dataset
    results: dict[str, Any] = {}
    if "popularity" in c.methods:
        counts = popularity.train_counts(data.splits["train"], data.num_items)
        results["popularity"] = {s: popularity.evaluate(counts, data.splits[s], c.topk) for s in c.splits}
    if "sasrec" in c.methods:
        results["sasrec"] = _sasrec_results(ctx)
    if "markov" in c.methods:
        results["markov"] = _markov_results(ctx)
    tables = [f"{method} / {split} ({int(r[split]['users'])} samples):\n{format_table(r[split], c.topk)}"
              for method, r in results.items() for split in c.splits]
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        (ctx.dir / METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
        shutil.rmtree(ctx.dir / RESUME_DIR, ignore_errors=True)
    return results
