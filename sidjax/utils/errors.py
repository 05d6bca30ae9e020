"""One error type for bad input data, always naming where the problem is."""
from __future__ import annotations

import os


class DataError(ValueError):
    """Malformed or inconsistent input data; the message names the file (and line, and field)."""

    def __init__(
        self, path: str | os.PathLike, message: str, line: int | None = None, field: str | None = None
    ):
        where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
        what = f"field '{field}': {message}" if field is not None else message
        super().__init__(f"{where}: {what}")
        self.path = os.fspath(path)
        self.message = message
        self.line = line
        self.field = field
