"""Kill a child training process with SIGKILL once it has checkpointed a given step (resume tests)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def kill_after_checkpoint(code: str, checkpoints: Path, min_step: int, timeout: float = 120.0) -> None:
    """Run `python -c code` and SIGKILL it as soon as `checkpoints/<step>` exists for some step >= `min_step`."""
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, JAX_PLATFORMS="cpu"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and child.poll() is None:
        found = checkpoints.glob("*") if checkpoints.exists() else []
        if any(p.name.isdigit() and int(p.name) >= min_step for p in found):
            break
        time.sleep(0.05)
    assert child.poll() is None, f"the child ended before it could be killed: {child.stderr.read()[-2000:]}"
    child.send_signal(signal.SIGKILL)
    child.wait()
