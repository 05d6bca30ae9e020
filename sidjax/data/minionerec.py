"""The papers' file formats: RecBole `.inter`, `inter.json`, `item.json`, `index.json`, `info.txt`, CSVs."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.data.errors import DataError
from sidjax.data.files import open_text, read_json, resolve

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"
ITEM_FIELDS = ("title", "description", "brand", "categories")


def _int(token: str, path: Path, line: int, field: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(path, f"field '{field}': '{token}' is not an integer id", line=line) from None


def read_inter(path: str | os.PathLike) -> list[tuple[int, list[int], int]]:
    """(user, history, target) rows of a RecBole sample file, in file order."""
    p = resolve(path)
    rows = []
    with open_text(p) as f:
        header = f.readline().rstrip("\r\n")
        if header != INTER_HEADER:
            raise DataError(p, f"expected header {INTER_HEADER!r}, got {header!r}", line=1)
        for n, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != 3:
                raise DataError(p, f"expected 3 tab-separated fields, got {len(cols)}", line=n)
            user = _int(cols[0], p, n, "user_id")
            history = [_int(t, p, n, "item_id_list") for t in cols[1].split()]
            if not history:
                raise DataError(p, "field 'item_id_list' is empty", line=n)
            rows.append((user, history, _int(cols[2], p, n, "item_id")))
    return rows


def write_inter(path: str | os.PathLike, rows: Sequence[tuple[int, Sequence[int], int]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(INTER_HEADER + "\n")
        for user, history, target in rows:
            f.write(f"{user}\t{' '.join(map(str, history))}\t{target}\n")


def read_sequences(path: str | os.PathLike) -> dict[int, tuple[int, ...]]:
    """`inter.json`: {user index: [item ids in time order]}."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise DataError(p, "expected a JSON object {user: [item ids]}")
    sequences = {}
    for user, seq in raw.items():
        if not isinstance(seq, list) or not all(isinstance(i, int) for i in seq):
            raise DataError(p, f"user {user}: expected a list of integer item ids")
        sequences[_int(user, p, None, "user")] = tuple(seq)
    return sequences


def read_items(path: str | os.PathLike) -> tuple[Item, ...]:
    """`item.json`: {item id: {title, description, brand, categories}}, ids must be 0..N-1."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise DataError(p, "expected a JSON object {item id: {title, ...}}")
    by_id = {}
    for key, meta in raw.items():
        item_id = _int(key, p, None, "item id")
        if not isinstance(meta, dict) or not isinstance(meta.get("title"), str):
            raise DataError(p, f"item {key}: expected an object with a string 'title'")
        by_id[item_id] = Item(**{k: str(meta.get(k) or "") for k in ITEM_FIELDS})
    missing = sorted(set(range(len(by_id))) - set(by_id))
    if missing:
        raise DataError(p, f"item ids must be 0..{len(by_id) - 1}; missing {missing[:5]}")
    return tuple(by_id[i] for i in range(len(by_id)))


def read_index(path: str | os.PathLike) -> dict[int, list[str]]:
    """`index.json`: {item id: ["<a_X>", "<b_Y>", "<c_Z>"]}."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise DataError(p, "expected a JSON object {item id: [SID tokens]}")
    out = {}
    for key, tokens in raw.items():
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(p, f"item {key}: expected a list of SID token strings")
        out[_int(key, p, None, "item id")] = tokens
    return out


def write_index(path: str | os.PathLike, index: Mapping[int, Sequence[str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({str(k): list(v) for k, v in sorted(index.items())}, f)


def load_recbole_dir(directory: str | os.PathLike, name: str, max_history: int) -> RecDataset:
    """A directory laid out like the papers' `data/Amazon/` (flat, or with raw/ and index/ folders)."""
    d = Path(directory)

    def find(filename: str) -> Path:
        for sub in ("", "raw", "index"):
            candidate = d / sub / filename
            for p in (candidate, candidate.with_name(candidate.name + ".gz")):
                if p.exists():
                    return p
        raise DataError(d / filename, "file not found (looked in ., raw/, index/, also .gz)")

    items = read_items(find(f"{name}.item.json"))
    sequences = read_sequences(find(f"{name}.inter.json"))
    splits = {s: Split.from_rows(read_inter(find(f"{name}.{s}.inter")), max_history) for s in SPLITS}
    return RecDataset(name=name, items=items, sequences=sequences, splits=splits).check(os.fspath(d))
