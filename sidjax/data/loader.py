"""Batches for training and evaluation: a grain pipeline that is deterministic, resumable and sharded.

Every process computes the same global plan for an epoch (a permutation seeded by
`(seed, epoch)`, optionally grouped into length buckets, cut into global batches)
and keeps its own rows of each global batch. So all processes see the same number
of batches with the same shapes at every step (what a multi-host jitted step
needs), their rows are disjoint, and together they cover every example.

Usage (the trainer):

    ds = loader.batches(records, batch_size=64, seed=config.seed, num_epochs=None)
    it = iter(ds)                       # a grain DatasetIterator
    batch = next(it)                    # {key: np.ndarray [64 // process_count, ...], "example_mask": bool}
    state = it.get_state()              # JSON-able; store it with the checkpoint
    it = iter(ds); it.set_state(state)  # yields exactly the batches not yet seen
    # Reading ahead in threads keeps the same exact state:
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)))

`records` is either columns (`{key: array [n, ...]}`, the fast path) or rows (a
sequence of `{key: array}`, e.g. a grain data source; rows may be ragged in the
keys that `Buckets` pads).
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import threading
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from sidjax.data.dataset import Split

Records = Mapping[str, np.ndarray] | Sequence[Mapping[str, Any]]
EXAMPLE_MASK = "example_mask"


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Length bucketing: each example goes to the smallest bound >= its length.

    A batch holds examples of one bucket only, and the keys in `pad_values` are
    padded (or cut, beyond an example's length only padding may live) along their
    first per-example axis to that bucket's bound: at the end, or at the start for
    the keys in `left_padded` (prompts for generation). Jitted steps thus see
    `len(bounds)` shapes instead of one per length.
    """

    lengths: Sequence[int]  # per example, in record order
    bounds: Sequence[int]  # ascending static lengths
    pad_values: Mapping[str, Any]  # key -> value used for padding
    left_padded: Sequence[str] = ()  # keys whose padding goes first

    def assign(self) -> np.ndarray:
        """Bucket number of each example."""
        bounds = np.asarray(self.bounds)
        lengths = np.asarray(self.lengths)
        if bounds.ndim != 1 or bounds.size == 0 or np.any(np.diff(bounds) <= 0):
            raise ValueError(f"bucket bounds must be a non-empty ascending list, got {list(self.bounds)}")
        if lengths.size and lengths.max() > bounds[-1]:
            worst = int(np.argmax(lengths))
            raise ValueError(f"example {worst} has length {lengths[worst]} > largest bucket bound {bounds[-1]}")
        return np.searchsorted(bounds, lengths, side="left")


def _num_records(records: Records) -> int:
    if isinstance(records, Mapping):
        sizes = {k: len(v) for k, v in records.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"record columns have different lengths: {sizes}")
        return next(iter(sizes.values()))
    return len(records)


def _fit(array: np.ndarray, axis: int, length: int, value: Any, left: bool) -> np.ndarray:
    """Pad with `value` or cut `array` along `axis` to `length`, at the end (or the start if `left`)."""
    size = array.shape[axis]
    if size >= length:
        keep = np.arange(size - length, size) if left else np.arange(length)
        return np.take(array, keep, axis=axis)
    pad = [(0, 0)] * array.ndim
    pad[axis] = (length - size, 0) if left else (0, length - size)
    return np.pad(array, pad, constant_values=value)


def _gather(records: Records, idx: np.ndarray, buckets: Buckets | None, bound: int | None) -> dict[str, np.ndarray]:
    pads = {} if buckets is None else dict(buckets.pad_values)
    left = set() if buckets is None else set(buckets.left_padded)
    if isinstance(records, Mapping):
        out = {k: np.asarray(v)[idx] for k, v in records.items()}
        out.update({k: _fit(out[k], 1, bound, pads[k], k in left) for k in pads})
        return out
    rows = [records[int(i)] for i in idx]
    out = {}
    for key in rows[0]:
        if key in pads:
            out[key] = np.stack([_fit(np.asarray(r[key]), 0, bound, pads[key], key in left) for r in rows])
        else:
            out[key] = np.stack([np.asarray(r[key]) for r in rows])
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """Which records form global batch k; a pure function of (seed, epoch)."""

    num_records: int
    global_batch: int
    seed: int
    shuffle: bool
    drop_remainder: bool
    bucket_of: np.ndarray | None  # int [n] or None
    _epochs: dict[int, list[tuple[np.ndarray, int]]] = dataclasses.field(default_factory=dict, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def bucket_sizes(self) -> list[int]:
        if self.bucket_of is None:
            return [self.num_records]
        return np.bincount(self.bucket_of).tolist()

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        sizes = self.bucket_sizes()
        if self.drop_remainder:
            return sum(s // self.global_batch for s in sizes)
        return sum(-(-s // self.global_batch) for s in sizes)

    def epoch(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        """(record ids padded with -1 to the global batch, bucket) of each batch of `epoch` (memoized)."""
        with self._lock:  # grain may read with several threads
            if epoch not in self._epochs:
                if len(self._epochs) >= 2:  # batches are read epoch after epoch
                    del self._epochs[min(self._epochs)]
                self._epochs[epoch] = self._make_epoch(epoch)
            return self._epochs[epoch]

    def _make_epoch(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_records) if self.shuffle else np.arange(self.num_records)
        batches = []
        for bucket in range(len(self.bucket_sizes())):
            ids = order if self.bucket_of is None else order[self.bucket_of[order] == bucket]
            stop = len(ids) - len(ids) % self.global_batch if self.drop_remainder else len(ids)
            for start in range(0, stop, self.global_batch):
                chunk = ids[start : start + self.global_batch]
                padded = np.full(self.global_batch, -1, dtype=np.int64)
                padded[: len(chunk)] = chunk
                batches.append((padded, bucket))
        if self.shuffle and self.bucket_of is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches


def batches(
    records: Records,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    drop_remainder: bool = True,
    buckets: Buckets | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> grain.MapDataset:
    """A MapDataset of this process's batches, epoch after epoch (`num_epochs=None`: forever).

    `batch_size` is the GLOBAL batch size; each process gets `batch_size // shard_count`
    rows of it (shards default to `jax.process_index()` / `jax.process_count()`).
    Each epoch is reshuffled; without shuffling, batches follow the record order (bucket
    after bucket when bucketing). With
    `drop_remainder=False` the last batch (per bucket) is filled up with copies of its
    first example, and `example_mask` (bool [local batch]) marks the real rows; it is
    all True otherwise.
    """
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in 0..{shard_count - 1}")
    if batch_size < 1 or batch_size % shard_count:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of shard_count {shard_count}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    n = _num_records(records)
    if n == 0:
        raise ValueError("no records to batch")
    plan = _Plan(
        num_records=n,
        global_batch=batch_size,
        seed=seed,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
        bucket_of=None if buckets is None else buckets.assign(),
    )
    per_epoch = plan.batches_per_epoch
    if per_epoch == 0:
        raise ValueError(f"{n} records make no full batch of {batch_size}; use drop_remainder=False")
    bounds = None if buckets is None else list(buckets.bounds)

    def make_batch(step: int, _: Any) -> dict[str, np.ndarray]:
        epoch, k = divmod(step, per_epoch)
        ids, bucket = plan.epoch(epoch)[k]
        local = ids[shard_index::shard_count]
        mask = local >= 0
        local = np.where(mask, local, ids[0])
        batch = _gather(records, local, buckets, None if bounds is None else bounds[bucket])
        batch[EXAMPLE_MASK] = mask
        return batch

    length = sys.maxsize if num_epochs is None else per_epoch * num_epochs
    return grain.MapDataset.range(length).map_with_index(make_batch)


def split_records(split: Split) -> dict[str, np.ndarray]:
    """Columns of a `dataset.Split`: users, history [n, H] (-1 padded), history_len, target."""
    return {
        "users": split.users,
        "history": split.history,
        "history_len": split.history_len,
        "target": split.target,
    }
