"""Stage `baselines`: popularity and SASRec on the same splits, scored by the same metric code.

Writes `metrics.json` = {method: {split: {HR@K, NDCG@K, users}, ...}}; SASRec
also records its chosen dropout, best epoch, the tried settings and its wall
time, and its per-epoch curves go to `metrics.jsonl` (prefix `sasrec/`).
"""
from __future__ import annotations

import json
import time
from typing import Any

import jax

from sidjax.baselines import popularity, sasrec
from sidjax.eval.metrics import format_table

METRICS_FILE = "metrics.json"


def run(ctx) -> dict[str, Any]:
    c = ctx.config.baselines
    data = ctx.dataset
    train = data.splits["train"]
    results: dict[str, Any] = {}
    if "popularity" in c.methods:
        counts = popularity.train_counts(train, data.num_items)
        results["popularity"] = {s: popularity.evaluate(counts, data.splits[s], c.topk) for s in c.splits}
    if "sasrec" in c.methods:
        start = time.time()
        best, trials = sasrec.tune(train, data.splits["valid"], data.num_items, c.sasrec, c.topk, c.eval_batch_size,
                                   writer=ctx.writer)
        scored = {s: best.valid if s == "valid" else sasrec.evaluate(best.model, data.splits[s], c.topk,
                                                                     c.eval_batch_size)
                  for s in c.splits}
        results["sasrec"] = {**scored, "dropout": best.dropout, "best_epoch": best.best_epoch,
                             "epochs": best.epochs, "trials": trials, "seconds": round(time.time() - start, 1)}
    tables = [f"{method} / {split} ({int(r[split]['users'])} samples):\n{format_table(r[split], c.topk)}"
              for method, r in results.items() for split in c.splits]
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        (ctx.dir / METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results
