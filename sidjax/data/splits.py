"""Samples from users' sequences under the two protocols the literature uses.

- `"time"`: MiniOneRec's family. One sample per position i >= 1 of every user, all samples
  sorted by target time and cut 8:1:1 (`amazon.build` does it, as it alone has timestamps).
- `"leave_one_out"`: TIGER / LC-Rec / LETTER's. Per user with sequence s: test target s[-1],
  valid target s[-2], train every earlier position i >= 1; histories keep the last
  `max_history` items before the target. Repeated items stay as they are.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

from sidjax.data.dataset import SPLITS, RecDataset, Split
from sidjax.utils.errors import DataError

SPLIT_RULES = ("time", "leave_one_out")


def leave_one_out(sequences: Mapping[int, Sequence[int]], max_history: int,
                  origin: str | os.PathLike = "") -> dict[str, Split]:
    """The three splits of leave-one-out; every user needs >= 3 items.

    Valid and test keep one row per user in user order. Train rows are ordered by how far their
    target lies from the user's last train item (farthest first), so `Split.latest(n)` keeps
    each user's most recent train targets, as it keeps the most recent ones under `"time"`.
    """
    short = [u for u, seq in sequences.items() if len(seq) < 3]
    if short:
        raise DataError(origin, f"leave-one-out needs >= 3 items per user; user {short[0]} has "
                                f"{len(sequences[short[0]])} ({len(short)} such users)")
    train: list[tuple[int, int, Sequence[int], int]] = []  # (distance from the end, user, history, target)
    rows: dict[str, list[tuple[int, Sequence[int], int]]] = {"valid": [], "test": []}
    for user, seq in sequences.items():
        seq = list(seq)
        last_train = len(seq) - 3
        for i in range(1, len(seq) - 2):
            train.append((last_train - i, user, seq[max(0, i - max_history):i], seq[i]))
        rows["valid"].append((user, seq[max(0, len(seq) - 2 - max_history):-2], seq[-2]))
        rows["test"].append((user, seq[max(0, len(seq) - 1 - max_history):-1], seq[-1]))
    train.sort(key=lambda r: -r[0])
    if not train:
        raise DataError(origin, "leave-one-out left no train samples (every user has exactly 3 items)")
    rows["train"] = [r[1:] for r in train]
    return {s: Split.from_rows(rows[s], max_history) for s in SPLITS}


def resplit(dataset: RecDataset, rule: str, max_history: int, origin: str | os.PathLike) -> RecDataset:
    """`dataset` with its splits rebuilt from its sequences by `rule` (`"time"` keeps the source's own)."""
    if rule not in SPLIT_RULES:
        raise ValueError(f"split rule '{rule}' is not one of {SPLIT_RULES}")
    if rule == "time":
        return dataset
    splits = leave_one_out(dataset.sequences, max_history, origin)
    return dataclasses.replace(dataset, splits=splits)
