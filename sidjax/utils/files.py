"""Opening data files the same way everywhere: plain or gzip, with clear errors."""
from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence, TextIO

from sidjax.utils.errors import DataError


def first_existing(candidates: Sequence[Path]) -> Path:
    """The first candidate that exists, plain or as .gz; the error lists where it looked."""
    for p in candidates:
        for path in (p, p.with_name(p.name + ".gz")):
            if path.exists():
                return path
    tried = ", ".join(os.fspath(p) for p in candidates)
    raise DataError(candidates[0], f"file not found (looked for {tried}, also .gz)")


def resolve(path: str | os.PathLike) -> Path:
    """`path` itself, or `path.gz` when only the compressed file exists."""
    return first_existing([Path(path)])


def open_text(path: str | os.PathLike) -> TextIO:
    p = resolve(path)
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


def read_json(path: str | os.PathLike) -> Any:
    p = resolve(path)
    with open_text(p) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(p, f"invalid JSON: {e.msg}", line=e.lineno) from None
