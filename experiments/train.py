"""Run the stages of a config: python -m experiments.train --config=experiments/configs/demo.py --workdir=DIR"""
from absl import logging

from experiments.launch import WORKDIR, run, start
from sidjax.stages import run_pipeline


def main(argv) -> None:
    config = start(argv)
    logging.info("stages: %s; workdir: %s", ", ".join(config.stages), WORKDIR.value)
    run_pipeline(config, WORKDIR.value)


if __name__ == "__main__":
    run(main)
