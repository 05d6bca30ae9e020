"""One owner per workdir: an exclusive lock held while a launch runs stages or evaluations in it.

Two launches on one workdir would collide on temporary files, interleave `metrics.jsonl` and
replace each other's models. So a launch takes `fcntl.flock` on `<workdir>/.lock` and writes its
pid, host and start time there; a second launch is refused naming that holder. The kernel
releases a flock when its process dies, so a lock file that still names a holder but can be
locked again was left by a dead process: it is named in the log and taken over.

In a multi-process job every process shares the workdir (shared storage): process 0 alone
locks, and tells the others whether it got the lock, so the whole job stops together.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO, Iterator

import jax
import numpy as np
from absl import logging

LOCK_FILE = ".lock"


class WorkdirBusy(RuntimeError):
    """Another live launch holds the workdir; the message names it."""


def _describe(holder: str) -> str:
    if not holder:
        return "another launch (starting: its record is not written yet)"
    try:
        h = json.loads(holder)
        return f"pid {h['pid']} on {h['host']} (since {h['since']})"
    except (ValueError, KeyError, TypeError):
        return f"an unreadable holder record {holder[:80]!r}"


def _acquire(workdir: Path) -> IO[str]:
    """The open, flocked lock file of `workdir`, now naming this process; WorkdirBusy if another holds it."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    f = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = f.read().strip()
        f.close()
        raise WorkdirBusy(f"workdir {workdir} is in use by {_describe(holder)} ({path}); wait for that launch to "
                          f"end, stop it, or use another --workdir") from None
    stale = f.read().strip()
    if stale:
        logging.warning("workdir %s: taking over a stale lock of %s, which is no longer running", workdir,
                        _describe(stale))
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
    f.flush()
    return f


def _release(f: IO[str]) -> None:
    f.seek(0)
    f.truncate()
    f.flush()
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def _agree(ok: bool) -> bool:
    """Process 0's outcome, on every process of the job."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[None]:
    """Hold `workdir` for the duration; WorkdirBusy (naming the holder) if another launch holds it."""
    workdir = Path(workdir)
    f, error = None, None
    if jax.process_index() == 0:
        try:
            f = _acquire(workdir)
        except WorkdirBusy as e:
            error = e
    if not _agree(error is None):
        raise error or WorkdirBusy(f"workdir {workdir} is in use by another launch (process 0 could not lock it)")
    try:
        yield
    finally:
        if f is not None:
            _release(f)
