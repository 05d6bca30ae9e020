"""Evaluate a saved model: python -m experiments.eval --config=experiments/configs/demo.py --workdir=DIR

The model is `--config.eval.checkpoint` (a model stage dir or a run dir) or, when
empty, the last finished model stage of `--workdir`; results go to
`<workdir>/eval_<stage>/` (metrics.json, <split>.jsonl).
"""
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from sidjax.api import find_bundle
from sidjax.configs import ConfigError, validate
from sidjax.data.sources import load_dataset
from sidjax.parallel import distributed
from sidjax.stages.eval import evaluate_bundle

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory (its model stages) and where results go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    config = _CONFIG.value
    try:
        validate(config)
    except ConfigError as e:
        raise app.UsageError(str(e)) from None
    workdir = Path(_WORKDIR.value)
    model_dir = find_bundle(config.eval.checkpoint or workdir)
    out_dir = workdir / f"eval_{model_dir.name}"
    logging.info("evaluating %s -> %s", model_dir, out_dir)
    evaluate_bundle(model_dir, config, load_dataset(config.data), out_dir)


if __name__ == "__main__":
    app.run(main)
