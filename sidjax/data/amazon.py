"""Raw Amazon Reviews (2018 or 2023 release) -> the papers' samples, with the papers' rules.

The rules follow MiniOneRec's `amazon18_data_process.py` (the preprocessing behind the
shipped Industrial_and_Scientific data):

1. Titles: an item is dropped when its metadata has no title, the title is scraped HTML
   (contains `<span id`), or, after unescaping `&quot;`/`&amp;` and stripping spaces and
   double quotes, it is one character or longer than `max_title_words` space-separated words.
   Reviews of dropped items (and of items without metadata) are ignored.
2. Time window: reviews with a time in [start_date, end_date] (the first instant of each
   date, UTC; "2018-11" means 2018-11-01 00:00:00) are kept.
3. Iterated k-core: users and items with fewer than k reviews are removed, again and again,
   until every user and item has >= k (repeat reviews count).
4. Ids: users numbered in order of their first kept review in the file; items numbered in
   order of first appearance when walking users in that order, each user's reviews sorted
   by time (stable).
5. Samples: per user, one per position i >= 1: history = the last <= max_history items
   before i, target = item i. All samples are stably sorted by target time and split
   8:1:1 (`split_ratios`) at int(n * 0.8) and int(n * 0.9).

(Upstream also widens the window by a year while fewer than 3,000 items survive; that
retry is not part of these rules: choose the dates in the config.)
"""
from __future__ import annotations

import dataclasses
import datetime
import html
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from absl import logging

from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.utils.errors import DataError
from sidjax.utils.files import first_existing, open_text, resolve
from sidjax.utils.progress import progress

HTML_MARKER = "<span id"
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class Format:
    """Where one release keeps its files and fields."""

    reviews: tuple[str, ...]  # candidate review file names, first existing wins ({name} = category)
    meta: str
    user: str
    item: str
    time: str
    time_per_second: int  # review time units per second
    brand: str
    categories: str


FORMATS = {
    "amazon2018": Format(
        reviews=("{name}_5.json", "{name}.json"),
        meta="meta_{name}.json",
        user="reviewerID",
        item="asin",
        time="unixReviewTime",
        time_per_second=1,
        brand="brand",
        categories="category",
    ),
    "amazon2023": Format(
        reviews=("{name}.jsonl",),
        meta="meta_{name}.jsonl",
        user="user_id",
        item="parent_asin",
        time="timestamp",
        time_per_second=1000,
        brand="store",
        categories="categories",
    ),
}


def parse_date(text: str) -> datetime.datetime:
    """'YYYY-MM' or 'YYYY-MM-DD' -> that day's first instant, UTC."""
    for fmt in ("%Y-%m", "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"'{text}' is not a date like 2016-10 or 2016-10-01")


@dataclasses.dataclass(frozen=True)
class Rules:
    """The papers' processing knobs (defaults live in `sidjax.configs.data`)."""

    start_date: str
    end_date: str
    k_core: int
    max_title_words: int
    max_history: int
    split_ratios: tuple[float, float, float]

    def window(self, time_per_second: int) -> tuple[int, int]:
        """[start, end] in review time units."""
        start, end = (int(parse_date(d).timestamp()) * time_per_second for d in (self.start_date, self.end_date))
        return start, end


@dataclasses.dataclass(frozen=True, slots=True)
class Review:
    user: str
    item: str
    time: int


def clean_title(title: Any, max_words: int) -> str | None:
    """The title the papers keep for an item, or None when the item is dropped (rule 1)."""
    if not isinstance(title, str) or HTML_MARKER in title:
        return None
    title = title.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    if len(title) <= 1 or len(title.split(" ")) > max_words:
        return None
    return title


def clean_text(value: Any) -> str:
    """Free text (a string or a list of strings) without HTML tags, entities or runs of whitespace."""
    if isinstance(value, list):
        return " ".join(filter(None, (clean_text(v) for v in value)))
    if not isinstance(value, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", value))).strip()


def _categories(value: Any) -> str:
    """A (possibly nested) category list as one line; scraped-HTML entries are skipped as upstream does."""
    if not isinstance(value, list):
        return ""
    flat = [c for v in value for c in (v if isinstance(v, list) else [v])]
    cleaned = (clean_text(c) for c in flat if isinstance(c, str) and "</span>" not in c)
    return ", ".join(c for c in cleaned if c)


def _json_lines(path: Path, desc: str) -> Iterator[tuple[int, dict]]:
    with open_text(path) as f:
        for n, line in enumerate(progress(f, desc=desc, unit="lines"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"invalid JSON: {e.msg}", line=n) from None
            if not isinstance(record, dict):
                raise DataError(path, "expected a JSON object", line=n)
            yield n, record


def _field(record: dict, key: str, kind: type, path: Path, line: int) -> Any:
    if key not in record:
        raise DataError(path, "is missing", line=line, field=key)
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(path, f"expected {kind.__name__}, got {value!r}", line=line, field=key)
    return value


def read_reviews(path: str | os.PathLike, fmt: Format) -> list[Review]:
    p = resolve(path)
    reviews = []
    for n, r in _json_lines(p, f"read {p.name}"):
        time = _field(r, fmt.time, int, p, n)
        reviews.append(Review(_field(r, fmt.user, str, p, n), _field(r, fmt.item, str, p, n), time))
    return reviews


def read_items(path: str | os.PathLike, fmt: Format, wanted: set[str], max_title_words: int) -> dict[str, Item]:
    """Items of `wanted` whose title passes rule 1 (for repeated records, the last valid one)."""
    p = resolve(path)
    items = {}
    for n, meta in _json_lines(p, f"read {p.name}"):
        key = _field(meta, fmt.item, str, p, n)
        if key not in wanted:
            continue
        title = clean_title(meta.get("title"), max_title_words)
        if title is None:
            continue
        brand = meta.get(fmt.brand)
        items[key] = Item(
            title=title,
            description=clean_text(meta.get("description")),
            brand=clean_text(brand) if isinstance(brand, str) else "",
            categories=_categories(meta.get(fmt.categories)),
        )
    return items


def k_core(reviews: Sequence[Review], k: int) -> list[Review]:
    """Rule 3: drop users and items with < k reviews until none is left (order kept)."""
    while True:
        users = Counter(r.user for r in reviews)
        items = Counter(r.item for r in reviews)
        if all(c >= k for c in users.values()) and all(c >= k for c in items.values()):
            return list(reviews)
        reviews = [r for r in reviews if users[r.user] >= k and items[r.item] >= k]


def split_points(total: int, ratios: Sequence[float]) -> tuple[int, int]:
    """Where train ends and valid ends (rule 5), as the papers compute them."""
    return int(total * ratios[0]), int(total * round(ratios[0] + ratios[1], 12))


def build(name: str, reviews: Sequence[Review], items: Mapping[str, Item], rules: Rules,
          time_per_second: int = 1, origin: str | os.PathLike = "") -> RecDataset:
    """Rules 1-5 on parsed reviews and the items that passed the title filter."""
    start, end = rules.window(time_per_second)
    kept = [r for r in reviews if r.item in items and start <= r.time <= end]
    kept = k_core(kept, rules.k_core)
    if not kept:
        raise DataError(origin, f"no reviews left after the title filter, the window {rules.start_date}.."
                                f"{rules.end_date} and the {rules.k_core}-core")
    by_user: dict[str, list[Review]] = {}
    for r in kept:
        by_user.setdefault(r.user, []).append(r)
    item_ids: dict[str, int] = {}
    sequences: dict[int, tuple[int, ...]] = {}
    samples = []  # (target time, user, history, target)
    for user, user_reviews in enumerate(by_user.values()):
        user_reviews.sort(key=lambda r: r.time)
        seq = tuple(item_ids.setdefault(r.item, len(item_ids)) for r in user_reviews)
        sequences[user] = seq
        for i in range(1, len(seq)):
            samples.append((user_reviews[i].time, user, seq[max(0, i - rules.max_history) : i], seq[i]))
    samples.sort(key=lambda s: s[0])
    train_end, valid_end = split_points(len(samples), rules.split_ratios)
    parts = dict(zip(SPLITS, (samples[:train_end], samples[train_end:valid_end], samples[valid_end:])))
    for split, part in parts.items():
        if not part:
            raise DataError(origin, f"split '{split}' is empty ({len(samples)} samples in all)")
    splits = {s: Split.from_rows([row[1:] for row in part], rules.max_history) for s, part in parts.items()}
    by_id = {i: items[key] for key, i in item_ids.items()}
    dataset = RecDataset(
        name=name,
        items=tuple(by_id[i] for i in range(len(by_id))),
        sequences=sequences,
        splits=splits,
    )
    logging.info("%s: %d users, %d items, %d reviews kept of %d", name, len(sequences), len(by_id), len(kept),
                 len(reviews))
    return dataset.check(os.fspath(origin))


def load_raw(directory: str | os.PathLike, name: str, rules: Rules, version: str) -> RecDataset:
    """The dataset of category `name` from a directory of raw files of release `version`."""
    if version not in FORMATS:
        raise ValueError(f"unknown Amazon release '{version}' (known: {', '.join(FORMATS)})")
    fmt = FORMATS[version]
    d = Path(directory)
    reviews_path = first_existing([d / f.format(name=name) for f in fmt.reviews])
    meta_path = first_existing([d / fmt.meta.format(name=name)])
    reviews = read_reviews(reviews_path, fmt)
    items = read_items(meta_path, fmt, {r.item for r in reviews}, rules.max_title_words)
    return build(name, reviews, items, rules, fmt.time_per_second, origin=reviews_path)
