"""SIGTERM for stages whose files survive a kill at any instant (teacher, eval): stop now, cleanly.

Their outputs are written so that SIGKILL at any point resumes exactly (the teacher's fsynced
answer cache, eval's per-batch progress marker, atomic renames), so SIGTERM needs no checkpoint
of its own: it raises `StagePreempted` in the main thread, the stage's `finally` blocks run, and
a relaunch resumes. The training loop (and SASRec) instead finish their step and checkpoint.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

from sidjax.train.loop import Preempted


class StagePreempted(Preempted):
    """SIGTERM stopped a stage whose progress is already on disk; relaunching resumes it."""

    def __init__(self, stage: str, kept: str):
        RuntimeError.__init__(self, f"stage {stage}: stopped by SIGTERM; {kept}; relaunch to resume")
        self.step = None


@contextlib.contextmanager
def sigterm_stops(stage: str, kept: str) -> Iterator[None]:
    """While inside, SIGTERM raises `StagePreempted(stage, kept)` (`kept`: what the relaunch resumes from)."""

    def handle(signum, frame) -> None:
        raise StagePreempted(stage, kept)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
