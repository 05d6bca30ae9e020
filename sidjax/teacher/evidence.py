"""What the offline teacher knows about items and users, computed from metadata and the train split only.

GREAM's reasoning curriculum grounds each step in data: the kind of each item (its leaf
category, or the head of its title where a catalogue has no categories), its brand, and how
often one kind follows another in the train split's next-item samples. Valid and test
samples never enter these counts.
"""
from __future__ import annotations

import collections
import dataclasses
import html
import re
from typing import Sequence

from sidjax.data.dataset import RecDataset
from sidjax.utils.catalog import Item

# The product type sits before the first of these in an Amazon title ("X Printer Filament, 1.75 mm, Black").
_TITLE_HEAD_END = re.compile(r",|\(|\[|\||:|;| - | – | with | for ", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z-]*[a-z]")
# Words that say how much, what size or colour, not what an item is.
_NOT_KINDS = frozenset("""
    a an and the of for with to in on by or from at as is it its this that x pack packs set sets pcs piece pieces
    count lot kit inch inches mm cm ft feet foot yd oz lb lbs ml gram grams kg mil gauge grit size sizes small
    medium large mini extra heavy duty high low new pro plus premium quality professional standard industrial
    scientific black white red blue green yellow orange clear grey gray silver gold pink purple brown assorted
    color colors stainless steel plastic metal rubber brass aluminum copper natural real true inc co ltd
    length width diameter thick thickness wide long male female per ounce digital dual waterproof type
    """.split())
_MIN_TITLES = 3
FALLBACK_KIND = "product"


def _words(text: str) -> list[str]:
    """Lower-case words, leaving out any token with a digit (model numbers, sizes: "DS18b20", "1.75MM")."""
    return [w for token in html.unescape(text).lower().split() if not any(c.isdigit() for c in token)
            for w in _WORD.findall(token)]


def _head(text: str) -> str:
    return _TITLE_HEAD_END.split(html.unescape(text), maxsplit=1)[0]


def item_kinds(items: Sequence[Item]) -> tuple[str, ...]:
    """A short lower-case name of what each item is: its leaf category, else its title's head noun.

    Without categories (Industrial's metadata has none) the kind is the last word of the title's head
    (the part before the first comma, bracket, " - ", " with ", " for ") that names a thing: not a brand
    word, nor a word of amount, size or colour. A head noun fewer than `_MIN_TITLES` titles share gives way
    to the head's most shared word: "3D Solutech Real Black 3D Printer PLA Filament, 1.75MM" -> "filament".
    A title with no such word is read from the head of the description, else the kind is "product".
    """
    heads = [_head(item.title) for item in items]
    shared = collections.Counter(w for head in heads for w in set(_words(head)))

    def kind(item: Item, head: str) -> str:
        if item.categories.strip():
            return html.unescape(re.split(r",|>", item.categories)[-1]).strip().lower() or FALLBACK_KIND
        brand = set(_words(item.brand))
        for text in (head, item.title, _head(item.description)):
            words = [w for w in _words(text) if w not in _NOT_KINDS and w not in brand]
            if words:
                return words[-1] if shared[words[-1]] >= _MIN_TITLES else max(reversed(words), key=shared.__getitem__)
        return FALLBACK_KIND

    return tuple(kind(item, head) for item, head in zip(items, heads))


def brand_name(item: Item) -> str:
    """The brand as a person reads it ("" when unknown or when it only repeats the title)."""
    brand = html.unescape(item.brand).strip()
    return "" if not brand or brand.casefold() == html.unescape(item.title).strip().casefold() else brand


@dataclasses.dataclass(frozen=True)
class Evidence:
    """Per-item kinds and brands, and the train split's kind-to-kind next-item counts."""

    kinds: tuple[str, ...]
    brands: tuple[str, ...]
    follows: dict[str, collections.Counter]  # kind of the last history item -> Counter of the next item's kind

    @classmethod
    def from_train(cls, dataset: RecDataset) -> "Evidence":
        kinds = item_kinds(dataset.items)
        brands = tuple(brand_name(item) for item in dataset.items)
        train = dataset.splits["train"]
        follows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for row in range(len(train)):
            last = int(train.history[row, train.history_len[row] - 1])
            follows[kinds[last]][kinds[int(train.target[row])]] += 1
        return cls(kinds, brands, dict(follows))

    def transition(self, last_kind: str, next_kind: str) -> tuple[int, int]:
        """(train samples whose last item is a `last_kind` and whose next item a `next_kind`, all after a `last_kind`)."""
        counts = self.follows.get(last_kind, collections.Counter())
        return counts[next_kind], sum(counts.values())

    def likely_next_kind(self, last_kind: str) -> str:
        """The kind that most often came next after a `last_kind` in train (ties: the first counted), else `last_kind`."""
        counts = self.follows.get(last_kind)
        return counts.most_common(1)[0][0] if counts else last_kind

    def common_brand(self, items: Sequence[int]) -> str:
        """The brand of at least two of `items` (the most frequent; ties: the most recent), else ""."""
        counts = collections.Counter(self.brands[i] for i in items if self.brands[i])
        if not counts:
            return ""
        best = max(counts.values())
        if best < 2:
            return ""
        return next(self.brands[i] for i in reversed(items) if counts.get(self.brands[i]) == best)

    def common_kind(self, items: Sequence[int]) -> str:
        """The kind most of `items` share (ties: the most recent)."""
        counts = collections.Counter(self.kinds[i] for i in items)
        best = max(counts.values())
        return next(self.kinds[i] for i in reversed(items) if counts[self.kinds[i]] == best)
