"""The LC-Rec / LETTER layout (TIGER, LC-Rec, LETTER, APAO, UniTok distribute their data this way).

A directory with:
- `<name>.inter.json`: `{user id: [item ids]}`, each list in time order (no timestamps);
- `<name>.item.json`: `{item id: {title, description, brand, categories}}`, any subset of the
  fields, each a string or a list of strings; HTML entities are decoded and tags dropped. An
  empty title falls back to the description's first `FALLBACK_TITLE_WORDS` words, else the
  categories, else the brand;
- optionally one `<name>.index*.json` (e.g. `Office.index.rq-kmeans.json`): the authors' SIDs,
  any number of levels, read as `paper_sids` (`sids.source = "paper"`); `data.index_file`
  names one when there are several.

Ids are integers 0..N-1 (strings in the JSON keys). Files may be gzipped. The files carry no
timestamps, so the splits are leave-one-out (`sidjax.data.splits`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sidjax.data.amazon import clean_text
from sidjax.data.dataset import Item, RecDataset
from sidjax.data.minionerec import ITEM_FIELDS, item_id_key, items_in_id_order, read_sequences
from sidjax.data.splits import leave_one_out
from sidjax.sid.index_file import read_index
from sidjax.utils.errors import DataError
from sidjax.utils.files import first_existing, read_json, resolve

FALLBACK_TITLE_WORDS = 16


def _text(value: Any, path: Path, item: str, field: str) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = (clean_text(v) for v in value)
        return (", " if field == "categories" else " ").join(p for p in parts if p)
    if value is None or isinstance(value, str):
        return clean_text(value)
    raise DataError(path, f"item {item}: expected a string or a list of strings, got {value!r:.80}", field=field)


def item_from_fields(fields: dict[str, str]) -> Item | None:
    """An item whose title is its own or, when that is empty, taken from its other fields (None if all are)."""
    title = fields.get("title", "")
    if not title:
        description = " ".join(fields.get("description", "").split()[:FALLBACK_TITLE_WORDS])
        title = description or fields.get("categories", "") or fields.get("brand", "")
    if not title:
        return None
    return Item(title=title, **{k: fields.get(k, "") for k in ITEM_FIELDS if k != "title"})


def read_items(path: str | os.PathLike) -> tuple[Item, ...]:
    """`<name>.item.json` of the LC-Rec layout -> items 0..N-1."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict) or not raw:
        raise DataError(p, "expected a non-empty JSON object {item id: {title, description, brand, categories}}")
    by_id: dict[int, Item] = {}
    for key, meta in raw.items():
        item_id = item_id_key(key, p)
        if not isinstance(meta, dict):
            raise DataError(p, f"item {key}: expected an object with some of {list(ITEM_FIELDS)}")
        item = item_from_fields({k: _text(meta.get(k), p, key, k) for k in ITEM_FIELDS})
        if item is None:
            raise DataError(p, f"item {key}: every text field ({', '.join(ITEM_FIELDS)}) is empty or missing")
        by_id[item_id] = item
    return items_in_id_order(by_id, p)


def find_index(directory: Path, name: str, index_file: str) -> Path | None:
    """The SID index: `index_file` when given, else the one `<name>.index*.json(.gz)`, else None."""
    if index_file:
        return first_existing([directory / index_file])
    found = sorted({*directory.glob(f"{name}.index*.json"), *directory.glob(f"{name}.index*.json.gz")})
    if len(found) > 1:
        raise DataError(directory, f"several SID index files {[p.name for p in found]}: "
                                   "name one with config key 'data.index_file'")
    return found[0] if found else None


def load_lcrec_dir(directory: str | os.PathLike, name: str, max_history: int, index_file: str = "") -> RecDataset:
    """The dataset `<name>` of an LC-Rec-layout directory, split leave-one-out."""
    d = Path(directory)
    items = read_items(first_existing([d / f"{name}.item.json"]))
    sequences_path = first_existing([d / f"{name}.inter.json"])
    sequences = read_sequences(sequences_path, len(items))
    index_path = find_index(d, name, index_file)
    paper_sids = None if index_path is None else {i: tuple(t) for i, t in read_index(index_path).items()}
    dataset = RecDataset(
        name=name,
        items=items,
        sequences=sequences,
        splits=leave_one_out(sequences, max_history, origin=sequences_path),
        paper_sids=paper_sids,
        paper_sids_origin=None if index_path is None else os.fspath(index_path),
    )
    return dataset.check(os.fspath(d))
