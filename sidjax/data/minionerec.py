"""The papers' file formats: RecBole `.inter`, `inter.json`, `item.json`, `index.json`, `info.txt`, CSVs.

Layout of a papers' data directory (MiniOneRec's `data/Amazon/`):
`raw/<name>.{train,valid,test}.inter`, `raw/<name>.inter.json`, `index/<name>.item.json`,
`index/<name>.index.json`, `info/<name>_<tag>.txt`, `{train,valid,test}/<name>_<tag>.csv`
(tag e.g. `5_2016-10-2018-11`). Readers also accept the files flat in one folder, or gzipped.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from absl import logging

from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.sid.index_file import read_index, write_index
from sidjax.utils.errors import DataError
from sidjax.utils.files import first_existing, open_text, read_json, resolve
from sidjax.utils.literal import literal_eval
from sidjax.utils.progress import progress

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"
ITEM_FIELDS = ("title", "description", "brand", "categories")
CSV_COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)
CSV_SID_COLUMNS = ("history_item_sid", "item_sid")
SUBDIRS = ("", "raw", "index", "info")
_USER = re.compile(r"A(\d+)")
_SID_TOKEN = re.compile(r"<[a-z]+_\d+>")

Row = tuple[int, Sequence[int], int]


def _int(token: str, path: Path, line: int | None, field: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(path, f"'{token}' is not an integer id", line=line, field=field) from None


def find_file(directory: str | os.PathLike, filename: str) -> Path:
    """`filename` (or its .gz) in `directory` or its raw/, index/, info/ folders."""
    return first_existing([Path(directory) / sub / filename for sub in SUBDIRS])


def find_optional(directory: str | os.PathLike, filename: str) -> Path | None:
    try:
        return find_file(directory, filename)
    except DataError:
        return None


# ---- RecBole samples, sequences, items, SID index -------------------------------------------


def _item_id(token: str, path: Path, line: int | None, field: str, num_items: int | None) -> int:
    item = _int(token, path, line, field)
    if num_items is not None and not 0 <= item < num_items:
        raise DataError(path, f"unknown item id {item} (items are 0..{num_items - 1})", line=line, field=field)
    return item


def read_inter(path: str | os.PathLike, num_items: int | None = None) -> list[Row]:
    """(user, history, target) rows of a RecBole sample file, in file order; ids checked when `num_items`."""
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
            history = [_item_id(t, p, n, "item_id_list", num_items) for t in cols[1].split()]
            if not history:
                raise DataError(p, "is empty", line=n, field="item_id_list")
            rows.append((user, history, _item_id(cols[2], p, n, "item_id", num_items)))
    if not rows:
        raise DataError(p, "has no samples")
    return rows


def write_inter(path: str | os.PathLike, rows: Sequence[Row]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(INTER_HEADER + "\n")
        for user, history, target in rows:
            f.write(f"{user}\t{' '.join(map(str, history))}\t{target}\n")


def read_sequences(path: str | os.PathLike, num_items: int | None = None) -> dict[int, tuple[int, ...]]:
    """`inter.json`: {user index: [item ids in time order]}; ids checked when `num_items`."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise DataError(p, "expected a JSON object {user: [item ids]}")
    sequences = {}
    for user, seq in raw.items():
        if not isinstance(seq, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in seq):
            raise DataError(p, f"user {user}: expected a list of integer item ids")
        bad = [i for i in seq if num_items is not None and not 0 <= i < num_items]
        if bad:
            raise DataError(p, f"user {user}: unknown item id {bad[0]} (items are 0..{num_items - 1})")
        sequences[_int(user, p, None, "user")] = tuple(seq)
    return sequences


def write_sequences(path: str | os.PathLike, sequences: Mapping[int, Sequence[int]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({str(u): list(s) for u, s in sequences.items()}, f, indent=2)


def read_items(path: str | os.PathLike) -> tuple[Item, ...]:
    """`item.json`: {item id: {title, description, brand, categories}}, ids must be 0..N-1."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise DataError(p, "expected a JSON object {item id: {title, ...}}")
    by_id = {}
    for key, meta in raw.items():
        item_id = item_id_key(key, p)
        if not isinstance(meta, dict) or not isinstance(meta.get("title"), str):
            raise DataError(p, f"item {key}: expected an object with a string 'title'")
        by_id[item_id] = Item(**{k: str(meta.get(k) or "") for k in ITEM_FIELDS})
    return items_in_id_order(by_id, p)


def item_id_key(key: str, path: Path) -> int:
    """An `item.json` key as an item id."""
    return _int(key, path, None, "item id")


def items_in_id_order(by_id: Mapping[int, Item], path: Path) -> tuple[Item, ...]:
    """Items 0..N-1 of an `item.json`; a gap in the ids is an error naming the file."""
    missing = sorted(set(range(len(by_id))) - set(by_id))
    if missing:
        raise DataError(path, f"item ids must be 0..{len(by_id) - 1}; missing {missing[:5]}")
    return tuple(by_id[i] for i in range(len(by_id)))


def write_items(path: str | os.PathLike, items: Sequence[Item]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({str(i): {k: getattr(item, k) for k in ITEM_FIELDS} for i, item in enumerate(items)}, f, indent=2)


def read_info(path: str | os.PathLike) -> dict[int, tuple[str, str]]:
    """`info.txt` (`sid \\t title \\t item id` per line) -> {item id: (sid string, title)}."""
    p = resolve(path)
    out = {}
    with open_text(p) as f:
        for n, line in enumerate(f, start=1):
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) != 3:
                raise DataError(p, f"expected 3 tab-separated fields (sid, title, item id), got {len(cols)}", line=n)
            out[_int(cols[2], p, n, "item id")] = (cols[0], cols[1])
    return out


def write_info(path: str | os.PathLike, items: Sequence[Item], index: Mapping[int, Sequence[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i, item in enumerate(items):
            f.write(f"{''.join(index[i])}\t{item.title}\t{i}\n")


def load_recbole_dir(directory: str | os.PathLike, name: str, max_history: int) -> RecDataset:
    """A directory laid out like the papers' `data/Amazon/` (flat, or with raw/ and index/ folders)."""
    items = read_items(find_file(directory, f"{name}.item.json"))
    sequences = read_sequences(find_file(directory, f"{name}.inter.json"), len(items))
    splits = {
        s: Split.from_rows(read_inter(find_file(directory, f"{name}.{s}.inter"), len(items)), max_history)
        for s in SPLITS
    }
    index_path = find_optional(directory, f"{name}.index.json")
    paper_sids = None if index_path is None else {i: tuple(t) for i, t in read_index(index_path).items()}
    dataset = RecDataset(name=name, items=items, sequences=sequences, splits=splits, paper_sids=paper_sids,
                         paper_sids_origin=None if index_path is None else os.fspath(index_path))
    return dataset.check(os.fspath(directory))


def write_recbole_dir(dataset: RecDataset, directory: str | os.PathLike) -> None:
    """The inverse of `load_recbole_dir`: raw/ (samples, sequences) and index/ (items, SIDs if any)."""
    raw, index = Path(directory) / "raw", Path(directory) / "index"
    raw.mkdir(parents=True, exist_ok=True)
    index.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        s = dataset.splits[split]
        rows = list(zip(s.users.tolist(), s.histories(), s.target.tolist()))
        write_inter(raw / f"{dataset.name}.{split}.inter", rows)
    write_sequences(raw / f"{dataset.name}.inter.json", dataset.sequences)
    write_items(index / f"{dataset.name}.item.json", dataset.items)
    if dataset.paper_sids is not None:
        write_index(index / f"{dataset.name}.index.json", dataset.paper_sids)


# ---- The papers' sample CSVs ----------------------------------------------------------------


def papers_tag(k_core: int, start_date: str, end_date: str) -> str:
    """The suffix the papers give their CSV / info files, e.g. `5_2016-10-2018-11`."""
    return f"{k_core}_{start_date}-{end_date}"


def csv_path(directory: str | os.PathLike, split: str, name: str, tag: str) -> Path:
    return Path(directory) / split / f"{name}_{tag}.csv"


def export_papers_files(
    dataset: RecDataset, index: Mapping[int, Sequence[str]], directory: str | os.PathLike, tag: str
) -> list[Path]:
    """Write `{train,valid,test}/<name>_<tag>.csv` and `info/<name>_<tag>.txt` exactly as the papers do.

    `index` gives each item's SID tokens (e.g. `dataset.paper_sids`, or the `sids` stage's).
    Users are written `A<user index>`; list columns are Python list reprs. Returns the paths.
    """
    missing = sorted(set(range(dataset.num_items)) - set(index))
    if missing:
        raise DataError(directory, f"the SID index lacks item ids {missing[:5]} (items are 0..{dataset.num_items - 1})")
    titles = dataset.titles()
    sids = {i: "".join(index[i]) for i in range(dataset.num_items)}
    written = []
    for split in SPLITS:
        s = dataset.splits[split]
        path = csv_path(directory, split, dataset.name, tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            rows = zip(s.users.tolist(), s.histories(), s.target.tolist())
            for user, history, target in progress(rows, desc=f"export {split} csv", total=len(s)):
                writer.writerow([
                    f"A{user}",
                    str([titles[i] for i in history]),
                    titles[target],
                    str(history),
                    target,
                    str([sids[i] for i in history]),
                    sids[target],
                ])
        written.append(path)
    info = Path(directory) / "info" / f"{dataset.name}_{tag}.txt"
    info.parent.mkdir(parents=True, exist_ok=True)
    write_info(info, dataset.items, index)
    return written + [info]


@dataclasses.dataclass(frozen=True, slots=True)
class CsvRow:
    """One parsed sample row of a papers' CSV (SIDs as token tuples, None without SID columns)."""

    line: int
    user: str
    history: list[int]
    target: int
    history_titles: list[str]
    title: str
    history_sids: list[tuple[str, ...]] | None
    sid: tuple[str, ...] | None


def _literal_list(text: str, path: Path, line: int, field: str, kind: type) -> list:
    try:
        value = literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError(path, f"not a Python list literal: {text[:80]!r}", line=line, field=field) from None
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise DataError(path, f"expected a list of {kind.__name__}, got {text[:80]!r}", line=line, field=field)
    return value


def _sid_tokens(text: str, path: Path, line: int, field: str) -> tuple[str, ...]:
    tokens = tuple(_SID_TOKEN.findall(text))
    if not tokens or "".join(tokens) != text:
        raise DataError(path, f"not a SID like '<a_1><b_2><c_3>': {text!r}", line=line, field=field)
    return tokens


def read_csv(path: str | os.PathLike) -> list[CsvRow]:
    """Rows of one papers' sample CSV; list columns parsed as Python literals."""
    p = resolve(path)
    rows = []
    with open_text(p) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(p, "file is empty (expected a header line)", line=1)
        required = [c for c in CSV_COLUMNS if c not in CSV_SID_COLUMNS]
        absent = [c for c in required if c not in header]
        if absent:
            raise DataError(p, f"missing columns {absent} (header: {header})", line=1)
        has_sids = all(c in header for c in CSV_SID_COLUMNS)
        for values in progress(reader, desc=f"read {p.name}", unit="rows"):
            n = reader.line_num
            if len(values) != len(header):
                raise DataError(p, f"expected {len(header)} fields, got {len(values)}", line=n)
            get = dict(zip(header, values)).__getitem__
            history = _literal_list(get("history_item_id"), p, n, "history_item_id", int)
            titles = _literal_list(get("history_item_title"), p, n, "history_item_title", str)
            if not history:
                raise DataError(p, "is empty", line=n, field="history_item_id")
            if len(titles) != len(history):
                raise DataError(p, f"has {len(titles)} titles for {len(history)} history ids",
                                line=n, field="history_item_title")
            history_sids, sid = None, None
            if has_sids:
                sid_texts = _literal_list(get("history_item_sid"), p, n, "history_item_sid", str)
                if len(sid_texts) != len(history):
                    raise DataError(p, f"has {len(sid_texts)} SIDs for {len(history)} history ids",
                                    line=n, field="history_item_sid")
                history_sids = [_sid_tokens(t, p, n, "history_item_sid") for t in sid_texts]
                sid = _sid_tokens(get("item_sid"), p, n, "item_sid")
            rows.append(CsvRow(
                line=n,
                user=get("user_id"),
                history=history,
                target=_int(get("item_id"), p, n, "item_id"),
                history_titles=titles,
                title=get("item_title"),
                history_sids=history_sids,
                sid=sid,
            ))
    return rows


def _find_csv(directory: Path, split: str, name: str) -> Path:
    """The one `<split>/<name>_*.csv` (or `<name>.csv`, either possibly gzipped)."""
    folder = directory / split
    patterns = (f"{name}_*.csv", f"{name}.csv", f"{name}_*.csv.gz", f"{name}.csv.gz")
    found = sorted({p for pattern in patterns for p in folder.glob(pattern)})
    if len(found) != 1:
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        what = "no" if not found else f"{len(found)}"
        raise DataError(folder / f"{name}_*.csv", f"{what} matching CSV files (present: {present})")
    return found[0]


def _user_ids(rows_by_split: Mapping[str, list[CsvRow]]) -> dict[str, int]:
    """`A<int>` -> int when every user id has that form (the papers'), else order of first appearance."""
    names = list(dict.fromkeys(r.user for s in SPLITS for r in rows_by_split[s]))
    matches = [_USER.fullmatch(u) for u in names]
    if all(matches):
        ids = {u: int(m.group(1)) for u, m in zip(names, matches)}
        if len(set(ids.values())) == len(ids):
            return ids
    return {u: i for i, u in enumerate(names)}


def _record(table: dict[int, Any], key: int, value: Any, path: Path, line: int, field: str) -> None:
    """table[key] = value, unless it already holds a different value (an inconsistent file)."""
    old = table.setdefault(key, value)
    if old != value:
        raise DataError(path, f"item {key} is {value!r} here but {old!r} earlier", line=line, field=field)


@dataclasses.dataclass
class _CsvCatalog:
    """What the CSV rows say about items (first statement wins; later ones must agree) and users."""

    titles: dict[int, str] = dataclasses.field(default_factory=dict)
    first_seen: dict[int, tuple[Path, int]] = dataclasses.field(default_factory=dict)
    sids: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    sequences: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    def add(self, row: CsvRow, user: int, path: Path) -> None:
        ids = row.history + [row.target]
        for i, title in zip(ids, row.history_titles + [row.title]):
            _record(self.titles, i, title, path, row.line, "item_title")
            self.first_seen.setdefault(i, (path, row.line))
        if row.sid is not None:
            for i, sid in zip(ids, row.history_sids + [row.sid]):
                _record(self.sids, i, sid, path, row.line, "item_sid")
        seq = self.sequences.setdefault(user, list(row.history))
        tail = seq[-len(row.history):]
        if tail != row.history:
            raise DataError(path, f"history {row.history} does not continue user {row.user}'s earlier samples "
                                  f"(their sequence so far ends {tail})", line=row.line, field="history_item_id")
        seq.append(row.target)


def load_csv_dir(directory: str | os.PathLike, name: str, max_history: int) -> RecDataset:
    """Samples from the papers' `{train,valid,test}/<name>_*.csv` (any category).

    Item titles come from the CSVs; an `<name>.item.json` beside them (in ., index/ or raw/)
    adds description/brand/categories and must agree on titles. Each user's sequence is
    rebuilt from their first sample's history plus every target, in split and file order,
    and every sample's history must continue it. SIDs: an `<name>.index.json` beside the
    CSVs, else the CSVs' SID columns when they cover every item.
    """
    d = Path(directory)
    paths = {s: _find_csv(d, s, name) for s in SPLITS}
    rows_by_split = {s: read_csv(paths[s]) for s in SPLITS}
    for s in SPLITS:
        if not rows_by_split[s]:
            raise DataError(paths[s], f"split '{s}' has no samples")
    item_path = find_optional(d, f"{name}.item.json")
    items = read_items(item_path) if item_path is not None else None
    _check_item_ids(rows_by_split, paths, items, item_path)
    users = _user_ids(rows_by_split)
    catalog = _CsvCatalog()
    samples: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        for row in rows_by_split[s]:
            catalog.add(row, users[row.user], paths[s])
            samples[s].append((users[row.user], row.history, row.target))
    items = _csv_items(d, name, items, catalog.titles, catalog.first_seen)
    paper_sids, paper_sids_origin = _csv_paper_sids(d, name, catalog.sids, len(items), paths)
    dataset = RecDataset(
        name=name,
        items=items,
        sequences={u: tuple(seq) for u, seq in catalog.sequences.items()},
        splits={s: Split.from_rows(samples[s], max_history) for s in SPLITS},
        paper_sids=paper_sids,
        paper_sids_origin=paper_sids_origin,
    )
    return dataset.check(os.fspath(d))


def _csv_paper_sids(
    directory: Path, name: str, csv_sids: Mapping[int, tuple[str, ...]], num_items: int, paths: Mapping[str, Path]
) -> tuple[dict[int, tuple[str, ...]] | None, str | None]:
    """`<name>.index.json` beside the CSVs (checked against their SID columns), else those columns if complete.

    Returns the SIDs and the file(s) they were read from.
    """
    index_path = find_optional(directory, f"{name}.index.json")
    if index_path is not None:
        paper_sids = {i: tuple(t) for i, t in read_index(index_path).items()}
        for i, sid in csv_sids.items():
            if paper_sids.get(i) != sid:
                raise DataError(index_path, f"item {i}: SID {paper_sids.get(i)} but the CSVs say {sid}")
        return paper_sids, os.fspath(index_path)
    if csv_sids and len(csv_sids) == num_items:
        return dict(csv_sids), "the SID columns of " + ", ".join(os.fspath(paths[s]) for s in SPLITS)
    if csv_sids:
        logging.warning("%s: the CSVs give SIDs for %d of %d items and no %s.index.json is beside them; "
                        "the dataset has no paper SIDs", directory, len(csv_sids), num_items, name)
    return None, None


def _check_item_ids(rows_by_split: Mapping[str, list[CsvRow]], paths: Mapping[str, Path],
                    items: Sequence[Item] | None, item_path: Path | None) -> None:
    """Every id in the rows names an item, checked at the row that holds it (before continuity is).

    Items are those of `<name>.item.json` when it is there, else the CSVs' own: ids 0..N-1 for the N
    distinct ids they hold, so an id past that range is a typo wherever it sits in a history.
    """
    if items is not None:
        count, known = len(items), f"{item_path.name} has items 0..{len(items) - 1}"
    else:
        count = len({i for s in SPLITS for row in rows_by_split[s] for i in row.history + [row.target]})
        known = f"the CSVs name {count} distinct items, so ids are 0..{count - 1}"
    for s in SPLITS:
        for row in rows_by_split[s]:
            for field, ids in (("history_item_id", row.history), ("item_id", [row.target])):
                bad = [i for i in ids if not 0 <= i < count]
                if bad:
                    what = "negative item id" if bad[0] < 0 else "unknown item id"
                    raise DataError(paths[s], f"{what} {bad[0]} ({known})", line=row.line, field=field)


def _csv_items(
    directory: Path, name: str, items: tuple[Item, ...] | None, titles: Mapping[int, str],
    first_seen: Mapping[int, tuple[Path, int]]
) -> tuple[Item, ...]:
    """Items 0..N-1: the CSVs' titles, with the rest of the text from `<name>.item.json` (`items`) if it is there."""
    if items is None:
        count = max(titles) + 1
        missing = sorted(set(range(count)) - set(titles))
        if missing:
            raise DataError(directory, f"item ids {missing[:5]} appear in no CSV and there is no {name}.item.json "
                                       f"to name them (items must be 0..{count - 1})")
        return tuple(Item(title=titles[i]) for i in range(count))
    for i, title in sorted(titles.items()):
        path, line = first_seen[i]
        if items[i].title != title:
            raise DataError(path, f"item {i} is {title!r} here but {items[i].title!r} in {name}.item.json",
                            line=line, field="item_title")
    return items
