"""Build the TFDS copy of a config's dataset once, for runs that read it with data.source = "tfds":

    python -m experiments.build_tfds --config=experiments/configs/office_scratch.py --config.data.data_dir=DIR
    python -m experiments.train --config=experiments/configs/office_scratch.py --config.data.source=tfds \\
        --config.data.data_dir=DIR --workdir=RUN

It reads `config.data` from its own source (any but "tfds": `--config.data.source=lcrec
--config.data.path=...` and so on) and writes `<data_dir>/sidjax_{samples,items,sequences}/<data.name>/`
(`sidjax.data.tfds_copy`), replacing an earlier copy of that name. Run it on one host; every host of
the run then reads the copy. A bad config or data file ends as one line `error: ...` and exit code 2.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.exits import USER_ERROR_EXIT
from sidjax.configs import validate
from sidjax.configs.rules import require
from sidjax.data import tfds_copy
from sidjax.data.sources import load_dataset

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config (get_config()).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    try:
        validate(config)
        require(config.data.source not in ("tfds", "mix"), "data.source",
                "a copy is built from the files it copies: give the source a run would read without it "
                "(for a mix, build each domain's copy and name them in data.domains)")
        require(bool(config.data.data_dir), "data.data_dir", "must name the directory to build the copy into")
        dataset = load_dataset(config.data)
        directories = tfds_copy.build(dataset, config.data)
    except (ValueError, OSError) as e:  # ConfigError and DataError are ValueErrors; each names the key or file
        sys.stderr.write(f"error: {e}\n")
        sys.exit(USER_ERROR_EXIT)
    logging.info("dataset %s: %s", dataset.name, dataset.statistics())
    for directory in directories:
        print(directory)


if __name__ == "__main__":
    app.run(main)
