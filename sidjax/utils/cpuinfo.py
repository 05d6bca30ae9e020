"""The CPU's model and feature flags from /proc/cpuinfo, read without jax (bench scripts read them
before jax starts, `sidjax.model.precision` to pick a dtype)."""
from __future__ import annotations

import re

CPUINFO = "/proc/cpuinfo"
_MODEL = re.compile(r"^model name\s*:\s*(.+)$", re.MULTILINE)
_FLAGS = re.compile(r"^flags\s*:\s*(.*)$", re.MULTILINE)


def read(path: str | None = None) -> str | None:
    """The text of `path` (default /proc/cpuinfo); None where it cannot be read (not Linux)."""
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def flags(text: str) -> frozenset[str] | None:
    """The first CPU's feature flags; None where the text has no x86 `flags` line (e.g. arm64)."""
    match = _FLAGS.search(text)
    return frozenset(match.group(1).split()) if match else None


def model_name(text: str) -> str | None:
    match = _MODEL.search(text)
    return match.group(1).strip() if match else None
