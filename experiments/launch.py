"""What every experiments/ app does first: the shared flags, joining the job, a validated config."""
import logging as std_logging

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from sidjax.configs import ConfigError, validate
from sidjax.parallel import distributed
from sidjax.stages import entries

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config (get_config()).")
WORKDIR = flags.DEFINE_string("workdir", None, "The run directory: every stage's outputs (resumable).")
flags.mark_flags_as_required(["config", "workdir"])


# Libraries whose INFO lines drown a run's own log (orbax writes ~20 per checkpoint save); their
# warnings and errors still show.
_CHATTY_LIBRARIES = ("/orbax/", "/jax/_src/xla_bridge.py")


class _LibraryInfoFilter(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(lib in record.pathname for lib in _CHATTY_LIBRARIES)


def start(argv: list[str]) -> ml_collections.ConfigDict:
    """Join the multi-process job (if any) and return the validated config; a bad config is a usage error.

    The config's own rules (`sidjax.configs.validate`), then its stage entries (`sidjax.stages.entries.check`:
    known stages, each using only entries listed before it), before any work.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_LibraryInfoFilter())
    distributed.initialize_from_flags()
    config = _CONFIG.value
    try:
        validate(config)
        entries.check(config)
    except ConfigError as e:
        raise app.UsageError(str(e)) from None
    return config
