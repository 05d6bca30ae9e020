"""Evaluate a saved model: python -m experiments.eval --config=experiments/configs/demo.py --workdir=DIR

The model is `--config.eval.checkpoint` when set (a model stage dir, or a run dir: its last
finished model stage), else the model stage entries of `--workdir` named in `--config.eval.models`
(two or more: one ensemble). With `--config.eval.rescore` (`sasrec` / `markov` entries of
`--workdir`) their dense models re-score the beams. Results go to
`<workdir>/evals/<model dirs joined by '+'>[@<re-scorer dirs joined by '+'>]/` (metrics.json,
<split>.jsonl), beside the stages' own directories and never inside one. It holds the workdir's lock
while it runs (`sidjax.stages.lock`), and refuses a prompt longer than the model's positions first.
"""
from pathlib import Path

from absl import logging

from experiments.launch import WORKDIR, run, start
from sidjax.data.sources import load_dataset
from sidjax.stages import stage_dirname
from sidjax.stages.eval import evaluate_bundle, find_bundle, standalone_dir
from sidjax.stages.launch_checks import check_prompt_length
from sidjax.stages.lock import workdir_lock


def main(argv) -> None:
    config = start(argv, runs_entries=False)
    workdir = Path(WORKDIR.value)
    c = config.eval
    if c.checkpoint:
        model_dirs = [find_bundle(c.checkpoint)]
    else:
        model_dirs = [find_bundle(workdir / stage_dirname(entry)) for entry in c.models]
    rescore_dirs = [workdir / stage_dirname(entry) for entry in c.rescore]
    out_dir = standalone_dir(workdir, model_dirs, rescore_dirs)
    dataset = load_dataset(config.data)
    check_prompt_length(config, dataset, model_dirs[0], "experiments.eval")
    with workdir_lock(workdir):
        logging.info("evaluating %s -> %s", model_dirs, out_dir)
        evaluate_bundle(model_dirs, config, dataset, out_dir, rescore_dirs=rescore_dirs)


if __name__ == "__main__":
    run(main)
