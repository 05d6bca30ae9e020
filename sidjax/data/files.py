"""Opening data files the same way everywhere: plain or gzip, with clear errors."""
from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, TextIO

from sidjax.data.errors import DataError


def resolve(path: str | os.PathLike) -> Path:
    """`path` itself, or `path.gz` when only the compressed file exists."""
    p = Path(path)
    if p.exists():
        return p
    gz = p.with_name(p.name + ".gz")
    if gz.exists():
        return gz
    raise DataError(p, "file not found (nor a .gz of it)")


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
