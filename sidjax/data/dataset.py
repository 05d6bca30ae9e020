"""The dataset object every stage consumes: items with text, sequences, samples per split."""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from sidjax.utils.catalog import Item
from sidjax.utils.errors import DataError

SPLITS = ("train", "valid", "test")


def pad_histories(histories: Sequence[Sequence[int]], max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """The most recent `max_history` items of each history, -1 padded at the end: int32 [n, H], lengths int32 [n]."""
    padded = np.full((len(histories), max_history), -1, dtype=np.int32)
    lengths = np.zeros(len(histories), dtype=np.int32)
    for i, hist in enumerate(histories):
        hist = list(hist)[-max_history:]
        padded[i, : len(hist)] = hist
        lengths[i] = len(hist)
    return padded, lengths


@dataclasses.dataclass(frozen=True)
class Split:
    """Samples (user, history <= H, target); `history[i, :history_len[i]]` is time-ordered, -1 pads."""

    users: np.ndarray  # int64 [n]
    history: np.ndarray  # int32 [n, H]
    history_len: np.ndarray  # int32 [n]
    target: np.ndarray  # int32 [n]

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def histories(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.history, self.history_len)]

    def latest(self, n: int) -> "Split":
        """The last `n` samples (all when n <= 0 or n >= len): splits are kept in target-time order."""
        if n <= 0 or n >= len(self):
            return self
        return self.take(slice(-n, None))

    def take(self, rows: np.ndarray | slice) -> "Split":
        """The samples at `rows` (an index array or a slice), in that order."""
        return Split(users=self.users[rows], history=self.history[rows], history_len=self.history_len[rows],
                     target=self.target[rows])

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, Sequence[int], int]], max_history: int) -> "Split":
        history, lengths = pad_histories([hist for _, hist, _ in rows], max_history)
        return cls(
            users=np.asarray([r[0] for r in rows], dtype=np.int64),
            history=history,
            history_len=lengths,
            target=np.asarray([r[2] for r in rows], dtype=np.int32),
        )


@dataclasses.dataclass(frozen=True)
class RecDataset:
    """Items 0..N-1 with text, each user's time-ordered item ids, and the samples of each split.

    `paper_sids` holds the Semantic IDs that came with the data (the papers'
    `index.json`: item id -> ("<a_X>", "<b_Y>", ...)), or None when the source has none;
    `sids.source = "paper"` uses them.
    """

    name: str
    items: tuple[Item, ...]
    sequences: Mapping[int, tuple[int, ...]]
    splits: Mapping[str, Split]
    paper_sids: Mapping[int, tuple[str, ...]] | None = None
    paper_sids_origin: str | None = None  # the file (or files) `paper_sids` were read from, for errors
    # Several datasets in one (`sidjax.data.mix`): the domain names, and each item's index into them.
    # One dataset: its own name, and item_domain None (every item in domain 0).
    domains: tuple[str, ...] = ()
    item_domain: np.ndarray | None = None  # int32 [num_items]
    # A view of some domains (`mix.restrict`): the domains it keeps (its samples, and the items its item
    # tasks teach) and, per split, each row's index in the whole dataset's split, so records keyed by those
    # rows (the teacher corpus) still find their sample. () and None: the whole dataset.
    selected: tuple[str, ...] = ()
    source_rows: Mapping[str, np.ndarray] | None = None

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def domain_names(self) -> tuple[str, ...]:
        return self.domains or (self.name,)

    def domain_items(self, domains: Sequence[str] = ()) -> np.ndarray:
        """Ids of the items in `domains` ((): the view's selected domains, else every item), ascending."""
        domains = tuple(domains) or self.selected
        if not domains or self.item_domain is None:
            return np.arange(self.num_items)
        wanted = [self.domain_names.index(d) for d in domains]
        return np.flatnonzero(np.isin(self.item_domain, wanted))

    def titles(self) -> list[str]:
        return [item.title for item in self.items]

    def statistics(self) -> dict[str, float | int]:
        stats: dict[str, float | int] = {
            "users": len(self.sequences),
            "items": len(self.domain_items()),
            "interactions": int(sum(len(s) for s in self.sequences.values())),
        }
        for split in SPLITS:
            s = self.splits[split]
            stats[f"{split}_samples"] = len(s)
            stats[f"{split}_mean_history"] = round(float(s.history_len.mean()), 3)
        return stats

    def check(self, origin: str) -> "RecDataset":
        """Validate ids and splits; `origin` names where the data came from for errors."""
        n = self.num_items
        for user, seq in self.sequences.items():
            bad = [i for i in seq if not 0 <= i < n]
            if bad:
                raise DataError(origin, f"user {user}: unknown item id {bad[0]} (items are 0..{n - 1})")
        for split in SPLITS:
            if split not in self.splits:
                raise DataError(origin, f"split '{split}' is missing")
            s = self.splits[split]
            if len(s) == 0:
                raise DataError(origin, f"split '{split}' is empty")
            ids = np.concatenate([s.target, s.history[s.history >= 0]])
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                bad = int(ids[(ids < 0) | (ids >= n)][0])
                raise DataError(origin, f"split '{split}': unknown item id {bad} (items are 0..{n - 1})")
            if (s.history_len < 1).any():
                raise DataError(origin, f"split '{split}': a sample has an empty history")
        if self.paper_sids is not None:
            missing = sorted(set(range(n)) - set(self.paper_sids))
            extra = sorted(set(self.paper_sids) - set(range(n)))
            if missing or extra:
                raise DataError(origin, f"the SID index does not match items 0..{n - 1}: "
                                        f"missing {missing[:5]}, unknown {extra[:5]}")
        return self
