"""Evaluate a saved model: python -m experiments.eval --config=experiments/configs/demo.py --workdir=DIR

The model is `--config.eval.checkpoint` (a model stage dir or a run dir) or, when
empty, the last finished model stage of `--workdir`; results go to
`<workdir>/evals/<stage>/` (metrics.json, <split>.jsonl), beside the stages' own directories and
never inside one. With `--config.eval.ensemble` the members are those stage entries of
`--workdir`, results in `<workdir>/evals/<a>+<b>.../`; with `--config.eval.rescore` (`sasrec` / `markov`
entries of `--workdir`) their dense models re-score the beams, results in
`<workdir>/evals/<model(s)>@<their dirs joined by '+'>/`.
"""
from pathlib import Path

from absl import app, logging

from experiments.launch import WORKDIR, start
from sidjax.data.sources import load_dataset
from sidjax.stages import stage_dirname
from sidjax.stages.eval import evaluate_bundle, find_bundle, standalone_dir


def main(argv) -> None:
    config = start(argv)
    workdir = Path(WORKDIR.value)
    if config.eval.ensemble:
        model_dir = [find_bundle(workdir / stage_dirname(entry)) for entry in config.eval.ensemble]
    else:
        model_dir = find_bundle(config.eval.checkpoint or workdir)
    rescore_dirs = [workdir / stage_dirname(entry) for entry in config.eval.rescore]
    out_dir = standalone_dir(workdir, model_dir if isinstance(model_dir, list) else [model_dir], rescore_dirs)
    logging.info("evaluating %s -> %s", model_dir, out_dir)
    evaluate_bundle(model_dir, config, load_dataset(config.data), out_dir, rescore_dirs=rescore_dirs)


if __name__ == "__main__":
    app.run(main)
