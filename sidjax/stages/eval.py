"""Stage `eval`: HR@K / NDCG@K of a model bundle on `config.eval.splits`, per-sample JSONL and a metrics table.

The model is `config.eval.checkpoint` when set (a model stage dir or a run dir),
else the output of the latest model stage listed before this one, or, with
`config.eval.ensemble`, the outputs of those model stage entries searched as one
ensemble (each SID scores the mean of the members' log-probabilities). With `config.eval.rescore`,
the eval entries after those `sasrec` / `markov` entries re-score the beams with their dense item
models (`sidjax.eval.rescore`). An entry tagged with a
mode (`eval:direct`, `eval:reasoning`) searches in that mode whatever `eval.mode` says, so
one run can evaluate the same model both ways.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from sidjax.api import find_bundle, recommender_from_bundle
from sidjax.data.dataset import RecDataset
from sidjax.eval.evaluate import MODES, Recommender, evaluate_split
from sidjax.eval.rescore import DenseRescorer
from sidjax.parallel.mesh import make_mesh
from sidjax.stages import parse_stage
from sidjax.stages.settings import search_settings
from sidjax.train import checkpoint as ckpt
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.ranking import format_table

METRICS_FILE = "metrics.json"
# experiments.eval writes <workdir>/evals/<model stage dir, or members joined by '+'>[@<re-scorer dirs joined
# by '+'>]/: no stage entry's directory (`<stage>` or `<stage>_<tag>`) lies in it, so a later evaluation never
# overwrites a stage's results.
STANDALONE_DIR = "evals"


def standalone_dir(workdir: Path, model_dirs: Sequence[Path], rescore_dirs: Sequence[Path] = ()) -> Path:
    """Where experiments.eval writes the evaluation of one model stage dir, or of an ensemble's members."""
    name = "+".join(Path(d).name for d in model_dirs)
    if rescore_dirs:
        name += "@" + "+".join(Path(d).name for d in rescore_dirs)
    return Path(workdir) / STANDALONE_DIR / name


def _recommender(bundles: list[ckpt.Bundle], mesh, rescorer: DenseRescorer | None) -> Recommender:
    """One bundle's Recommender, or one over several that read and write the same tokens (an ensemble)."""
    first = bundles[0]
    for other in bundles[1:]:
        same = (np.array_equal(other.sids, first.sids) and np.array_equal(other.level_offsets, first.level_offsets)
                and other.tokenizer.to_str() == first.tokenizer.to_str())
        if not same:
            raise ValueError(f"config key 'eval.ensemble': {other.directory} has other SIDs, token layout or "
                             f"tokenizer than {first.directory}; ensemble members must share them")
    models = None if len(bundles) == 1 else tuple(b.model for b in bundles)
    return recommender_from_bundle(first, mesh, models=models, rescorer=rescorer)[0]


def evaluate_bundle(model_dir: Path | Sequence[Path], config: ml_collections.ConfigDict, dataset: RecDataset,
                    out_dir: Path, writer: MetricsWriter | None = None, rescore_dirs: Sequence[Path] = ()
                    ) -> dict[str, Any]:
    """Evaluate the bundle in `model_dir` (or the ensemble of several) on every split of `config.eval`.

    `rescore_dirs`: the directories of `config.eval.rescore`'s entries, in its order, whose dense
    models re-score the beams (with `config.eval.rescore_weights`); () = no re-scoring.
    """
    c = config.eval
    mesh = make_mesh(config.mesh)
    dirs = [Path(model_dir)] if isinstance(model_dir, (str, Path)) else [Path(d) for d in model_dir]
    bundles = [ckpt.load_bundle(d, step=None if c.step < 0 else c.step, mesh=mesh) for d in dirs]
    rescorer = None
    if rescore_dirs:
        if len(rescore_dirs) != len(c.rescore):
            raise ValueError(f"evaluate_bundle: {len(rescore_dirs)} re-scorer dirs for eval.rescore {tuple(c.rescore)}")
        rescorer = DenseRescorer.load([(parse_stage(entry)[0], Path(d), w)
                                       for entry, d, w in zip(c.rescore, rescore_dirs, c.rescore_weights)])
    rec = _recommender(bundles, mesh, rescorer)
    settings = search_settings(c)
    step = bundles[0].step if len(bundles) == 1 else [b.step for b in bundles]
    results: dict[str, Any] = {"model": str(dirs[0]) if len(dirs) == 1 else [str(d) for d in dirs], "step": step,
                               "mode": c.mode, "beams": c.beams, "normalize": c.normalize}
    if rescorer is not None:
        results["rescore"] = [{"model": str(d), "weight": w} for d, w in zip(rescore_dirs, c.rescore_weights)]
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
            writer.write(bundles[0].step, {k: v for k, v in metrics.items() if k != "users"}, prefix=f"eval/{split}/")
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        (out_dir / METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def _listed_after(config: ml_collections.ConfigDict, spec: str, entries: Sequence[str]) -> bool:
    """Whether `spec` comes after all of `entries` (none: False) in config.stages."""
    stages = list(config.stages)
    return bool(entries) and stages.index(spec) > max(stages.index(e) for e in entries)


def run(ctx) -> dict[str, Any]:
    config = ctx.config
    if ctx.tag in MODES:
        config = config.copy_and_resolve_references()
        config.eval.mode = ctx.tag
    if _listed_after(config, ctx.spec, config.eval.ensemble):
        model_dir = [ctx.output_of(entry) for entry in config.eval.ensemble]
    elif config.eval.checkpoint:
        model_dir = find_bundle(config.eval.checkpoint)
    else:
        source = ctx.latest_model_stage()
        if source is None:
            raise ValueError(f"stage '{ctx.spec}' needs an earlier model stage in config.stages "
                             "or config key 'eval.checkpoint'")
        model_dir = ctx.output_of(source)
    rescore = tuple(config.eval.rescore)
    rescore_dirs = [ctx.output_of(entry) for entry in rescore] if _listed_after(config, ctx.spec, rescore) else []
    return evaluate_bundle(model_dir, config, ctx.dataset, ctx.dir, ctx.writer, rescore_dirs)
