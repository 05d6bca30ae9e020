"""What every experiments/ app does: the shared flags, joining the job, a validated config, the run's log
file, and one clear line for an error the user can fix.

`run(main)` replaces `app.run(main)`. An error the user caused or can fix (a bad config or data file,
a busy workdir, a changed config, a full disk, a plan that does not fit memory) ends the app as one
line `error: ...` on stderr and exit code 2; a SIGTERM preemption (its checkpoint saved) as one line
`preempted: ...` and exit code 75 (EX_TEMPFAIL: relaunch to resume). The traceback goes to
`<workdir>/launch.log` (every launch's log lines, appended) and to stderr only with `--verbose`.
The process then ends at once, so that background threads of a failed save (orbax's asyncio loop)
cannot bury the line under their own tracebacks.
"""
import errno
import functools
import logging as std_logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.exits import LOG_FILE, PREEMPTED_EXIT, USER_ERROR_EXIT
from sidjax.configs import ConfigError, validate
from sidjax.parallel import distributed
from sidjax.parallel.memory import MemoryPlanError
from sidjax.stages import entries
from sidjax.stages.lock import WorkdirBusy
from sidjax.train.loop import NonFiniteLoss, Preempted

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config (get_config()).")
WORKDIR = flags.DEFINE_string("workdir", None, "The run directory: every stage's outputs (resumable).")
VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, print its traceback too (it is always in the log file).")
flags.mark_flags_as_required(["config", "workdir"])

# Errors a user causes or can fix; each message names the file / key and what to do.
USER_ERRORS = (ConfigError, ValueError, OSError, MemoryPlanError, WorkdirBusy, NonFiniteLoss)

# Libraries whose INFO lines drown a run's own log (orbax writes ~20 per checkpoint save); their
# warnings and errors still show.
_CHATTY_LIBRARIES = ("/orbax/", "/jax/_src/xla_bridge.py")
_log_file: std_logging.Handler | None = None


class _LibraryInfoFilter(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(lib in record.pathname for lib in _CHATTY_LIBRARIES)


class _ConsoleFilter(_LibraryInfoFilter):
    """On stderr, also a library's error line without its traceback (one per failed background write of
    a save, on a full disk): the log file, which sees each record first, keeps them."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.exc_info and any(lib in record.pathname for lib in _CHATTY_LIBRARIES):
            record.exc_info = record.exc_text = None
        return super().filter(record)


class _LogFile(std_logging.FileHandler):
    """The run's log file; one that cannot be written (a full disk) stops quietly instead of printing a
    traceback per log line."""

    def handleError(self, record: std_logging.LogRecord) -> None:
        std_logging.getLogger().removeHandler(self)


def _quiet_closed_loop_hook(default: Callable) -> Callable:
    """sys.unraisablehook that drops "Event loop is closed": after a failed async save (a full disk) every
    pending write's completion reports one, from native code, before the real error arrives."""

    def hook(unraisable) -> None:
        if not (type(unraisable.exc_value) is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"):
            default(unraisable)

    return hook


def _open_log(workdir: Path) -> None:
    """Append this launch's log lines (process 0's) to `<workdir>/launch.log`."""
    global _log_file
    if jax.process_index() != 0:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    _log_file = _LogFile(workdir / LOG_FILE, encoding="utf-8")
    _log_file.setFormatter(std_logging.Formatter("%(asctime)s pid %(process)d %(levelname)s %(message)s"))
    _log_file.addFilter(_LibraryInfoFilter())
    std_logging.getLogger().handlers.insert(0, _log_file)  # before the console's filter strips library tracebacks


def start(argv: list[str], *, runs_entries: bool = True) -> ml_collections.ConfigDict:
    """Join the multi-process job (if any) and return the validated config, with the log file opened.

    The config's own rules (`sidjax.configs.validate`), then its stage entries (`sidjax.stages.entries.check`:
    known stages, each using only entries listed before it), before any work: a bad config creates no workdir.
    An app that runs a section itself, not the pipeline's entries (`runs_entries=False`: `experiments.eval`),
    drops them unchecked: a knob set for this run (`eval.think_paths` with `eval.mode=reasoning`) cannot
    make an entry it never runs (`entries["eval:sft"]`, direct mode) invalid.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_ConsoleFilter())
    distributed.initialize_from_flags()
    config = _CONFIG.value
    if runs_entries:
        validate(config)
        entries.check(config)
    else:
        config.entries = ml_collections.ConfigDict()
        validate(config)
    _open_log(Path(WORKDIR.value))
    return config


def _one_line(error: BaseException) -> str:
    """The error as one line: a full disk said plainly, any message's lines joined."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        message = f"the disk is full{where} ({error.strerror or error}); free space or use another --workdir"
    else:
        message = str(error) or type(error).__name__
        if "No space left on device" in message:  # a library's own error around the OSError
            message += "; the disk is full: free space or use another --workdir"
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _end(error: BaseException, raised: BaseException, prefix: str, code: int) -> None:
    """Log the traceback of what was `raised`, print `error` as one line (and the traceback with --verbose),
    and end the process now."""
    trace = "".join(traceback.format_exception(type(raised), raised, raised.__traceback__))
    if _log_file is not None:
        _log_file.handle(std_logging.LogRecord("launch", std_logging.ERROR, __file__, 0, "%s", (trace,), None))
        _log_file.flush()
    if VERBOSE.value:
        sys.stderr.write(trace)
    for handler in std_logging.getLogger().handlers:
        handler.flush()
    sys.stderr.write(f"{prefix}: {_one_line(error)}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and those it was raised from or during (a library may wrap the OSError of a failed save)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _guarded(main: Callable[[list[str]], None], argv: list[str]) -> None:
    try:
        main(argv)
    except Exception as e:
        for error in _chain(e):
            if isinstance(error, Preempted):
                _end(error, e, "preempted", PREEMPTED_EXIT)
            if isinstance(error, USER_ERRORS):
                _end(error, e, "error", USER_ERROR_EXIT)
        raise


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)`, with a user error ending as one line (see the module docstring)."""
    sys.unraisablehook = _quiet_closed_loop_hook(sys.unraisablehook)
    app.run(functools.partial(_guarded, main))
