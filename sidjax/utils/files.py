"""Opening data files the same way everywhere: plain or gzip, with clear errors."""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np

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


class TextLines:
    """A UTF-8 text file (plain or gzip) read line by line, line endings kept (as `newline=""`).

    Each line is decoded on its own, so a bad byte is a `DataError` naming the file and its line,
    and a cut-off or corrupt gzip stream one naming the file and the last line read.
    """

    def __init__(self, path: Path):
        self.path = path
        self.line = 0  # lines read so far
        self._raw: BinaryIO = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")

    def readline(self) -> str:
        try:
            raw = self._raw.readline()
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(self.path, f"cannot be read after line {self.line} ({e}): the file is truncated or "
                                       "damaged; download or write it again") from None
        if not raw:
            return ""
        self.line += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(self.path, f"byte {e.start + 1} of the line (0x{raw[e.start]:02x}) is not UTF-8; "
                                       "save the file as UTF-8", line=self.line) from None

    def read(self) -> str:
        return "".join(self)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "TextLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_text(path: str | os.PathLike) -> TextLines:
    return TextLines(resolve(path))


def read_json(path: str | os.PathLike) -> Any:
    p = resolve(path)
    with open_text(p) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(p, f"invalid JSON: {e.msg}", line=e.lineno) from None


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """A `.npy` array (no pickles); a truncated or damaged file is a `DataError` naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (ValueError, EOFError, OSError) as e:
        raise DataError(path, f"is not a readable .npy array (truncated or damaged: {e})") from None
