"""The teacher corpus on disk: what the `teacher` stage writes and the SFT tasks read.

A corpus directory holds `items.jsonl` (one ItemText per line), `users.jsonl`
(one UserText per line) and `manifest.json` (who wrote it; `template: true`
marks the offline template teacher's text, so nobody mistakes it for LLM text).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from sidjax.utils.errors import DataError

ITEMS_FILE = "items.jsonl"
USERS_FILE = "users.jsonl"
MANIFEST_FILE = "manifest.json"


@dataclasses.dataclass(frozen=True)
class ItemText:
    """Teacher text for one item (task 7)."""

    item: int
    sid: str
    analysis: str  # step 1: what the item is, from its metadata
    narrative: str  # step 2: the same, naming the item only by its SID
    source: str  # "template" or "llm:<model>"


@dataclasses.dataclass(frozen=True)
class UserText:
    """Teacher text for one sample of a split (task 8 and stage-2 reasoning)."""

    split: str
    index: int  # row of the split
    user: int
    target: int
    reasoning: str  # step 1: the analyst's path; never names the target
    narrative: str  # step 2: history recited by SIDs, the reasoning, the target SID
    source: str


@dataclasses.dataclass(frozen=True)
class Corpus:
    path: Path
    items: Mapping[int, ItemText]
    users: Mapping[tuple[str, int], UserText]
    manifest: Mapping[str, Any]

    @property
    def template(self) -> bool:
        return bool(self.manifest.get("template"))


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_corpus(directory: str | os.PathLike, items: Iterable[ItemText], users: Iterable[UserText], manifest: Mapping[str, Any]) -> dict[str, int]:
    """Write the three files atomically; returns the record counts."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    items = sorted(items, key=lambda t: t.item)
    users = sorted(users, key=lambda t: (t.split, t.index))
    _write_atomic(d / ITEMS_FILE, (json.dumps(dataclasses.asdict(t), ensure_ascii=False) for t in items))
    _write_atomic(d / USERS_FILE, (json.dumps(dataclasses.asdict(t), ensure_ascii=False) for t in users))
    counts = {"items": len(items), "users": len(users)}
    _write_atomic(d / MANIFEST_FILE, [json.dumps({**manifest, **counts}, indent=2, sort_keys=True)])
    return counts


def _read_records(path: Path, cls: type) -> list[Any]:
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    if not path.is_file():
        raise DataError(path, "teacher corpus file is missing (run the 'teacher' stage)")
    out = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"not valid JSON ({e.msg})", line_no) from None
            if not isinstance(record, dict) or set(record) != set(fields):
                raise DataError(path, f"expected exactly the fields {sorted(fields)}", line_no)
            for name, kind in fields.items():
                expected = int if kind == "int" else str
                if not isinstance(record[name], expected) or isinstance(record[name], bool):
                    raise DataError(path, f"field '{name}' must be {expected.__name__}", line_no)
            out.append(cls(**record))
    return out


def load_corpus(directory: str | os.PathLike) -> Corpus:
    d = Path(directory)
    manifest_path = d / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(manifest_path, "teacher corpus manifest is missing (run the 'teacher' stage)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(manifest_path, f"not valid JSON ({e.msg})") from None
    items = {t.item: t for t in _read_records(d / ITEMS_FILE, ItemText)}
    users = {(t.split, t.index): t for t in _read_records(d / USERS_FILE, UserText)}
    return Corpus(path=d, items=items, users=users, manifest=manifest)
