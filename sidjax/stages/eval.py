"""Stage `eval`: HR@K / NDCG@K of a model bundle on `config.eval.splits`, per-sample JSONL and ranks, a table.

Each entry reads its own settings (`config.eval` overridden by `config.entries[<entry>]`): the
model is `eval.checkpoint` when set (a model stage dir or a run dir), else the outputs of the model
stage entries in `eval.models`, two or more searched as one ensemble (each SID scores the mean of
the members' log-probabilities). The `sasrec` / `markov` entries in `eval.rescore` re-score the
beams with their dense item models (`sidjax.eval.rescore`): the beams of a search, or with
`eval.beams_from` those an earlier eval entry of the same search saved (no second search). `eval.mode`
picks direct or reasoning search, so one run can evaluate the same model both ways (`eval:direct`,
`eval:reasoning`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from sidjax import bundle as bundles
from sidjax.data.dataset import RecDataset
from sidjax.data.mix import restrict
from sidjax.eval.evaluate import Recommender, SearchSettings, evaluate_split
from sidjax.eval.rescore import DenseRescorer
from sidjax.eval.saved_beams import rescore_file
from sidjax.parallel.mesh import make_mesh
from sidjax.stages.context import DONE, MODEL_STAGES, parse_stage, stage_dirname
from sidjax.stages.preemption import sigterm_stops
from sidjax.stages.settings import search_settings
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.ranking import RANKS_FILE, format_table, ranking_metrics, write_ranks

METRICS_FILE = "metrics.json"
# <split>.progress.json: the batches a killed evaluation finished, so its relaunch resumes after them.
PROGRESS_SUFFIX = ".progress.json"
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


def find_bundle(path: str | os.PathLike) -> Path:
    """A model stage directory: `path` itself if it holds a bundle, else the run's last finished model stage."""
    d = Path(path)
    if (d / bundles.BUNDLE).is_file():
        return d
    config_path = d / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{d}: neither a model bundle ({bundles.BUNDLE}) nor a run directory (config.json)")
    stages = json.loads(config_path.read_text(encoding="utf-8")).get("stages", [])
    finished = [s for s in stages if parse_stage(s)[0] in MODEL_STAGES and (d / stage_dirname(s) / DONE).is_file()]
    if not finished:
        raise FileNotFoundError(f"{d}: no finished model stage ({', '.join(MODEL_STAGES)}) in this run")
    return d / stage_dirname(finished[-1])


def _recommender(members: list[bundles.Bundle], mesh, rescorer: DenseRescorer | None) -> Recommender:
    """One bundle's Recommender, or one over several that read and write the same tokens (an ensemble)."""
    first = members[0]
    for other in members[1:]:
        same = (np.array_equal(other.sids, first.sids) and np.array_equal(other.level_offsets, first.level_offsets)
                and other.tokenizer.to_str() == first.tokenizer.to_str())
        if not same:
            raise ValueError(f"config key 'eval.models': {other.directory} has other SIDs, token layout or "
                             f"tokenizer than {first.directory}; ensemble members must share them")
    models = None if len(members) == 1 else tuple(b.model for b in members)
    return first.recommender(mesh, models=models, rescorer=rescorer)


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
    members = [bundles.load(d, step=None if c.step < 0 else c.step, mesh=mesh) for d in dirs]
    rescorer = _rescorer(c, rescore_dirs) if rescore_dirs else None
    rec = _recommender(members, mesh, rescorer)
    settings = search_settings(c)
    step = members[0].step if len(members) == 1 else [b.step for b in members]
    results: dict[str, Any] = {"model": str(dirs[0]) if len(dirs) == 1 else [str(d) for d in dirs], "step": step,
                               "mode": c.mode, "beams": c.beams, "normalize": c.normalize}
    if rescorer is not None:
        results["rescore"] = _described_rescore(c, rescore_dirs)
    if writer is not None:
        writer.forget_after(members[0].step - 1)  # the rows a killed run of this eval wrote
    # The model, its files' write times and the search: a marker another evaluation left (or one of a model
    # written again since) is not resumed.
    header = {**results, "written_ns": [_written_ns(d / bundles.BUNDLE) for d in dirs]
              + [_written_ns(Path(d) / DONE) for d in rescore_dirs]}
    if dataset.item_domain is None:
        results.update(_evaluate_splits(rec, dataset, c, settings, out_dir, writer, header, members[0].step))
        if jax.process_index() == 0:
            _write_metrics(out_dir, results, c.splits)
        return results
    # A mix: each domain on its own samples, ranking its own catalogue, in <out_dir>/<domain>/ (laid out as a
    # one-domain eval), and every domain's metrics under "domains" in <out_dir>/metrics.json.
    described, results["domains"] = dict(results), {}
    for domain in tuple(c.domains) or dataset.selected or dataset.domain_names:
        view, items = restrict(dataset, (domain,)), dataset.domain_items((domain,))
        metrics = _evaluate_splits(rec.within(items), view, c, settings, out_dir / domain, writer,
                                   {**header, "domain": domain}, members[0].step, domain)
        results["domains"][domain] = metrics
        if jax.process_index() == 0:
            _write_metrics(out_dir / domain, {**described, "domain": domain, **metrics}, c.splits)
    if jax.process_index() == 0:
        _write_metrics(out_dir, results, ())
    return results


def _rescorer(c: ml_collections.ConfigDict, rescore_dirs: Sequence[Path]) -> DenseRescorer:
    """The dense models of `eval.rescore`, loaded from their entries' directories (in its order)."""
    if len(rescore_dirs) != len(c.rescore):
        raise ValueError(f"{len(rescore_dirs)} re-scorer dirs for eval.rescore {tuple(c.rescore)}")
    return DenseRescorer.load([(parse_stage(entry)[0], Path(d), w)
                               for entry, d, w in zip(c.rescore, rescore_dirs, c.rescore_weights)])


def _described_rescore(c: ml_collections.ConfigDict, rescore_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    return [{"model": str(d), "weight": w} for d, w in zip(rescore_dirs, c.rescore_weights)]


def rescore_saved(source: Path, config: ml_collections.ConfigDict, dataset: RecDataset, out_dir: Path,
                  writer: MetricsWriter | None, rescore_dirs: Sequence[Path]) -> dict[str, Any]:
    """`config.eval.rescore` applied to the beams the eval in `source` saved (`eval.beams_from`), written as
    `evaluate_bundle` writes a search with the same re-scoring, plus `beams_from` in metrics.json."""
    c = config.eval
    if dataset.item_domain is not None:
        raise ValueError("re-scoring saved beams of a mix of domains is not supported (eval.beams_from)")
    described = json.loads((source / METRICS_FILE).read_text(encoding="utf-8"))
    rescorer = _rescorer(c, rescore_dirs)
    results: dict[str, Any] = {key: described[key] for key in ("model", "step", "mode", "beams", "normalize")}
    results["rescore"] = _described_rescore(c, rescore_dirs)
    results["beams_from"] = str(source)
    step = described["step"] if isinstance(described["step"], int) else described["step"][0]
    if writer is not None:
        writer.forget_after(step - 1)

    def rescore(split: str, samples: Path | None) -> tuple[dict[str, float], np.ndarray]:
        ranks = rescore_file(source / f"{split}.jsonl", rescorer, c.batch_size,
                             samples if jax.process_index() == 0 else None)
        metrics = {**ranking_metrics(ranks, c.topk), "users": float(len(ranks))}
        logging.info("eval %s (%d samples, %d beams, %s, re-scored beams of %s): %s", split, len(ranks), c.beams,
                     c.mode, source, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "users"))
        return metrics, ranks

    results.update(_score_splits(rescore, c, out_dir, writer, step))
    if jax.process_index() == 0:
        _write_metrics(out_dir, results, c.splits)
    return results


def _split_table(where: str, metrics: dict[str, float], c: ml_collections.ConfigDict) -> str:
    reasoning = ", ".join(f"{k.removeprefix('reasoning/')} {v:.3f}" for k, v in metrics.items()
                          if k.startswith("reasoning/"))
    return (f"{where} ({int(metrics['users'])} samples, {c.beams} beams, {c.mode}):\n"
            f"{format_table(metrics, c.topk)}" + (f"\nreasoning: {reasoning}" if reasoning else ""))


def _evaluate_splits(rec: Recommender, dataset: RecDataset, c: ml_collections.ConfigDict, settings: SearchSettings,
                     out_dir: Path, writer: MetricsWriter | None, header: dict[str, Any], step: int,
                     domain: str = "") -> dict[str, Any]:
    """{split: metrics} of `config.eval.splits`, with the samples JSONL and the hit ranks in `out_dir`."""

    def search(split: str, samples: Path | None) -> tuple[dict[str, float], np.ndarray]:
        return evaluate_split(rec, dataset, split, settings, batch_size=c.batch_size, ks=c.topk,
                              max_users=c.max_users, samples_path=samples,
                              progress_path=out_dir / f"{split}{PROGRESS_SUFFIX}", progress_tag=header)

    return _score_splits(search, c, out_dir, writer, step, domain)


def _score_splits(score: Callable[[str, Path | None], tuple[dict[str, float], np.ndarray]],
                  c: ml_collections.ConfigDict, out_dir: Path, writer: MetricsWriter | None, step: int,
                  domain: str = "") -> dict[str, Any]:
    """{split: metrics} of `config.eval.splits` by `score(split, samples path or None)` -> (metrics, hit ranks):
    the tables printed, the metrics logged, the ranks written to `out_dir`."""
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    results, tables, ranks = {}, [], {}
    for split in c.splits:
        metrics, ranks[split] = score(split, out_dir / f"{split}.jsonl" if c.write_samples else None)
        results[split] = metrics
        tables.append(_split_table(f"{domain} {split}" if domain else split, metrics, c))
        if writer is not None:
            prefix = f"eval/{domain}/{split}/" if domain else f"eval/{split}/"
            writer.write(step, {k: v for k, v in metrics.items() if k != "users"}, prefix=prefix)
    if jax.process_index() == 0:
        print("\n".join(tables), flush=True)
        if c.mode == "reasoning" and c.write_samples:
            print(reasoning_examples(out_dir / f"{c.splits[0]}.jsonl"), flush=True)
        write_ranks(out_dir / RANKS_FILE, ranks)
    return results


def _write_metrics(out_dir: Path, results: dict[str, Any], splits: Sequence[str]) -> None:
    """metrics.json, written whole or not at all; then the progress markers it replaces go."""
    path = out_dir / METRICS_FILE
    path.with_name(METRICS_FILE + ".tmp").write_text(json.dumps(results, indent=2), encoding="utf-8")
    os.replace(path.with_name(METRICS_FILE + ".tmp"), path)
    for split in splits:
        (out_dir / f"{split}{PROGRESS_SUFFIX}").unlink(missing_ok=True)


def reasoning_examples(samples: Path, count: int = 2, shown: int = 3) -> str:
    """The first `count` samples of a reasoning-mode JSONL as text: history titles -> reasoning -> top titles."""
    blocks = []
    with open(samples, encoding="utf-8") as f:
        for line, _ in zip(f, range(count)):
            record = json.loads(line)
            history = "; ".join(h["title"] for h in record["history"])
            top = "; ".join(r["titles"][0] for r in record["recommendations"][:shown])
            blocks.append(f"example {record['split']} sample {record['index']} (user {record['user']}):\n"
                          f"  history: {history}\n  reasoning: {record['reasoning']!r}\n  top {shown}: {top}\n"
                          f"  target: {record['target']['title']} (hit rank {record['hit_rank']})")
    return "\n".join(blocks)


def _written_ns(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def run(ctx) -> dict[str, Any]:
    c = ctx.config.eval
    model_dir = find_bundle(c.checkpoint) if c.checkpoint else [ctx.output_of(entry) for entry in c.models]
    rescore_dirs = [ctx.output_of(entry) for entry in c.rescore]
    if c.beams_from:
        return rescore_saved(ctx.output_of(c.beams_from), ctx.config, ctx.dataset, ctx.dir, ctx.writer, rescore_dirs)
    with sigterm_stops(ctx.spec, "the finished batches are kept in <split>" + PROGRESS_SUFFIX):
        return evaluate_bundle(model_dir, ctx.config, ctx.dataset, ctx.dir, ctx.writer, rescore_dirs)
