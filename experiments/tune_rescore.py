"""Choose the dense re-scorers' weights on valid: python -m experiments.tune_rescore --config=C --workdir=DIR

Re-scoring (`eval.rescore`, `sidjax.eval.rescore`) adds weight x log P_dense(SID) per dense model to the
beams an eval found. This reads those beams once from an eval written without re-scoring (`--beams`,
default `<workdir>/eval_ensemble`: its `<split>.jsonl` holds every beam with its score and items), scores
them once with each model of `--config.eval.rescore`, and ranks every point of the weight grid (`--grid`,
the same values for each model) on `--split` (valid: choose there, measure test once;
`sidjax.eval.rescore_tuning`). It prints the best points and the config's own weights, and writes the
whole grid to `<workdir>/evals/rescore_grid_<split>.json`. Nothing is searched again: 81 points took 11 s
on 2 cores for `industrial_scratch`, where one eval per point takes about two minutes.
"""
import json
from pathlib import Path

import numpy as np
from absl import flags, logging

from experiments.launch import WORKDIR, run, start
from sidjax.configs import stage_of
from sidjax.eval.rescore import SCORERS
from sidjax.eval.rescore_tuning import grid_search, read_beams
from sidjax.stages import stage_dirname
from sidjax.utils.ranking import DEFAULT_KS

_BEAMS = flags.DEFINE_string("beams", None, "An eval's directory without re-scoring (default <workdir>/eval_ensemble).")
_SPLIT = flags.DEFINE_string("split", "valid", "The split whose beams choose the weights.")
_GRID = flags.DEFINE_list("grid", ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.8", "1.0"],
                          "Weights tried for each re-scorer (0 leaves it out).")
_SHOW = flags.DEFINE_integer("show", 10, "How many of the best grid points to print.")


def main(argv) -> None:
    config = start(argv)
    workdir = Path(WORKDIR.value)
    if not config.eval.rescore:
        raise ValueError("--config.eval.rescore names no dense model to tune")
    beams_dir = Path(_BEAMS.value) if _BEAMS.value else workdir / "eval_ensemble"
    path = beams_dir / f"{_SPLIT.value}.jsonl"
    if not path.exists():
        raise ValueError(f"{path}: no beams (run an eval without re-scoring first, e.g. the eval:ensemble entry)")
    try:
        grid = sorted({float(w) for w in _GRID.value})
    except ValueError as e:
        raise ValueError(f"--grid: weights must be numbers, got {_GRID.value}") from e
    if grid[0] < 0:
        raise ValueError(f"--grid: weights must be >= 0, got {grid[0]}")
    histories, scores, items, sids, targets = read_beams(path)
    logging.info("%s: %d samples, %d beams", path, len(histories), scores.shape[1])
    dense = []
    for entry in config.eval.rescore:
        scorer = SCORERS[stage_of(entry)](workdir / stage_dirname(entry))
        dense.append(scorer.sid_log_probs(histories, items).astype(np.float64))
    ks = tuple(k for k in DEFAULT_KS if k <= scores.shape[1])
    rows = grid_search(scores, dense, grid, sids, targets, ks)
    names = list(config.eval.rescore)
    own = tuple(float(w) for w in config.eval.rescore_weights)
    print(f"{path}: {len(histories)} samples; re-scorers {names}; best {_SHOW.value} of {len(rows)} by NDCG@10")
    print(f"{'weights':>24}  HR@1    HR@10   NDCG@10 NDCG@20")
    own_rows = [r for r in rows if tuple(r["weights"]) == own]
    for r in rows[:_SHOW.value] + [{"config": True, **r} for r in own_rows]:
        label = ("config " if "config" in r else "") + ",".join(f"{w:g}" for w in r["weights"])
        print(f"{label:>24}  {r['HR@1']:.4f}  {r['HR@10']:.4f}  {r['NDCG@10']:.4f}  {r.get('NDCG@20', float('nan')):.4f}")
    out = workdir / "evals" / f"rescore_grid_{_SPLIT.value}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"beams": str(path), "rescore": names, "grid": rows}, indent=1))
    print(f"the whole grid: {out}")


if __name__ == "__main__":
    run(main)
