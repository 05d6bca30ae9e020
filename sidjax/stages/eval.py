"""Stage `eval`: HR@K / NDCG@K of a model bundle on `config.eval.splits`, per-sample JSONL and a metrics table.

The model is `config.eval.checkpoint` when set (a model stage dir or a run dir),
else the output of the latest model stage listed before this one. An entry tagged with a
mode (`eval:direct`, `eval:reasoning`) searches in that mode whatever `eval.mode` says, so
one run can evaluate the same model both ways.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from sidjax.api import find_bundle, recommender_from_bundle
from sidjax.data.dataset import RecDataset
from sidjax.eval.evaluate import MODES, SearchSettings, evaluate_split
from sidjax.eval.metrics import format_table
from sidjax.parallel.mesh import make_mesh
from sidjax.train import checkpoint as ckpt
from sidjax.utils.metrics import MetricsWriter

METRICS_FILE = "metrics.json"


def evaluate_bundle(model_dir: Path, config: ml_collections.ConfigDict, dataset: RecDataset, out_dir: Path,
                    writer: MetricsWriter | None = None) -> dict[str, Any]:
    """Evaluate the bundle in `model_dir` on every split of `config.eval`; writes into `out_dir`."""
    c = config.eval
    mesh = make_mesh(config.mesh)
    bundle = ckpt.load_bundle(model_dir, step=None if c.step < 0 else c.step, mesh=mesh)
    rec, _, _ = recommender_from_bundle(bundle, mesh)
    settings = SearchSettings.from_config(c)
    results: dict[str, Any] = {"model": str(model_dir), "step": bundle.step, "mode": c.mode, "beams": c.beams,
                               "normalize": c.normalize}
    tables = []
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    for split in c.splits:
        samples = out_dir / f"{split}.jsonl" if c.write_samples else None
        metrics = evaluate_split(rec, dataset, split, settings, batch_size=c.batch_size, ks=c.topk,
                                 max_users=c.max_users, samples_path=samples)
        results[split] = metrics
        tables.append(f"{split} ({int(metrics['users'])} samples, {c.beams} beams, {c.mode}):\n"
                      f"{format_table(metrics, c.topk)}")
        if writer is not None:
            writer.write(bundle.step, {k: v for k, v in metrics.items() if k != "users"}, prefix=f"eval/{split}/")
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        (out_dir / METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def run(ctx) -> dict[str, Any]:
    config = ctx.config
    if ctx.tag in MODES:
        config = config.copy_and_resolve_references()
        config.eval.mode = ctx.tag
    if config.eval.checkpoint:
        model_dir = find_bundle(config.eval.checkpoint)
    else:
        source = ctx.latest_model_stage()
        if source is None:
            raise ValueError(f"stage '{ctx.spec}' needs an earlier model stage in config.stages "
                             "or config key 'eval.checkpoint'")
        model_dir = ctx.output_of(source)
    return evaluate_bundle(model_dir, config, ctx.dataset, ctx.dir, ctx.writer)
