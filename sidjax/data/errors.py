"""One error type for bad input data, always naming where the problem is."""
from __future__ import annotations

import os


class DataError(ValueError):
    """Malformed or inconsistent input data; the message names the file (and line)."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
        super().__init__(f"{where}: {message}")
        self.path = os.fspath(path)
        self.line = line
