"""Run the stages of a config: python -m experiments.train --config=experiments/configs/demo.py --workdir=DIR"""
from absl import app, flags, logging
from ml_collections import config_flags

from sidjax.configs import ConfigError, validate
from sidjax.parallel import distributed
from sidjax.stages import run_pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every stage's outputs (resumable).")
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
    logging.info("stages: %s; workdir: %s", ", ".join(config.stages), _WORKDIR.value)
    run_pipeline(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
