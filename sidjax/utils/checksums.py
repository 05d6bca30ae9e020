"""SHA-256 manifests of saved files: written once a save is complete, checked before anything reads them.

A manifest is a `SHA256SUMS` file in `sha256sum` format (`<hex>  <relative path>` per line, so
`sha256sum -c SHA256SUMS` checks it by hand too), written atomically beside what it covers. A
directory saved before manifests existed has none: it is read unchecked.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

MANIFEST = "SHA256SUMS"
_CHUNK = 1 << 20


class DamagedFileError(ValueError):
    """A saved file is missing or no longer matches the checksum written when it was saved."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(directory: str | os.PathLike) -> list[str]:
    """Every file below `directory` (relative POSIX paths, sorted), the manifest itself excluded."""
    root = Path(directory)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
                  and not p.name.endswith(".tmp"))


def write_manifest(directory: str | os.PathLike, names: Iterable[str] | None = None) -> Path:
    """Checksum `names` (paths relative to `directory`; default every file below it) into `directory/SHA256SUMS`."""
    root = Path(directory)
    names = files_under(root) if names is None else sorted(names)
    text = "".join(f"{sha256_of(root / name)}  {name}\n" for name in names)
    path = root / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def verify_manifest(directory: str | os.PathLike) -> bool:
    """Check every file `directory/SHA256SUMS` lists; False when there is no manifest (nothing checked).

    Raises `DamagedFileError` naming the first file that is missing or differs.
    """
    root = Path(directory)
    manifest = root / MANIFEST
    if not manifest.is_file():
        return False
    for number, line in enumerate(manifest.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DamagedFileError(manifest, f"line {number} is not '<sha256>  <file>': the manifest is damaged")
        path = root / name
        if not path.is_file():
            raise DamagedFileError(path, f"missing (listed in {manifest})")
        if sha256_of(path) != digest:
            raise DamagedFileError(path, f"damaged: its SHA-256 differs from the one written when it was saved "
                                         f"({manifest})")
    return True
