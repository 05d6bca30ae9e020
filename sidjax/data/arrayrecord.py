"""Prepared (tokenized) examples at scale: N ArrayRecord shards that every host reads in parallel.

Writer: `array_record`'s own `ArrayRecordWriter`, not a tensorflow-datasets builder. Our
examples are already numpy arrays made by our own pipeline (no download / split logic for a
builder to add), and the builder API would pull TensorFlow and tfds into every host's
environment for what is, in the end, the same ArrayRecord file. Records are written with
`group_size:1`, so each one is randomly accessible (what grain's global shuffle needs).

Layout: `<prefix>-00000-of-00004.array_record` ... Shard i holds a contiguous range of
examples, so the shards read in order are the examples in order. A record is one example,
`{key: np.ndarray}`, serialized with msgpack (flax.serialization: dtype and shape kept).

Two ways to read:
- `ExampleSource(paths)`: random access to every example (a grain data source); give it to
  `sidjax.data.loader.batches`, which plans global batches and reads only this process's rows;
- `process_shard(paths)`: a grain MapDataset of the files of this process only (files are dealt
  out to processes; disjoint, together complete), for streaming passes such as eval or export.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from flax import serialization

from sidjax.utils.progress import progress

SUFFIX = ".array_record"
WRITER_OPTIONS = "group_size:1"
Example = Mapping[str, np.ndarray]


def shard_paths(prefix: str | os.PathLike, num_shards: int) -> list[Path]:
    """The file names of an `num_shards`-way dataset at `prefix`."""
    return [Path(f"{prefix}-{i:05d}-of-{num_shards:05d}{SUFFIX}") for i in range(num_shards)]


def encode(example: Example) -> bytes:
    return serialization.msgpack_serialize({k: np.asarray(v) for k, v in example.items()})


def decode(record: bytes) -> dict[str, np.ndarray]:
    return serialization.msgpack_restore(record)


def write_shards(examples: Sequence[Example], prefix: str | os.PathLike, num_shards: int) -> list[Path]:
    """Write `examples` to `num_shards` files (contiguous ranges, sizes differ by at most one).

    Each file is written under a temporary name and renamed when complete, so a reader
    never opens a half-written shard.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if len(examples) < num_shards:
        raise ValueError(f"{len(examples)} examples cannot fill {num_shards} shards")
    paths = shard_paths(prefix, num_shards)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(examples), num_shards + 1).astype(int)
    for path, start, end in progress(list(zip(paths, bounds[:-1], bounds[1:])), desc="arrayrecord", unit="shard"):
        partial = path.with_name(path.name + ".tmp")
        writer = ArrayRecordWriter(str(partial), WRITER_OPTIONS)
        try:
            for i in range(start, end):
                writer.write(encode(examples[i]))
        finally:
            writer.close()
        os.replace(partial, path)
    return paths


def find_shards(prefix: str | os.PathLike) -> list[Path]:
    """All shards of the dataset at `prefix`, in order; an error names any missing one."""
    pattern = re.compile(re.escape(Path(prefix).name) + rf"-(\d{{5}})-of-(\d{{5}}){re.escape(SUFFIX)}$")
    found = {}
    for name in glob.glob(f"{glob.escape(str(prefix))}-*-of-*{SUFFIX}"):
        match = pattern.search(name)
        if match:
            found[(int(match[1]), int(match[2]))] = Path(name)
    if not found:
        raise FileNotFoundError(f"no ArrayRecord shards '{prefix}-NNNNN-of-NNNNN{SUFFIX}'")
    totals = {total for _, total in found}
    if len(totals) != 1:
        raise ValueError(f"{prefix}: shards of different datasets are mixed (totals {sorted(totals)})")
    total = totals.pop()
    missing = [str(p) for i, p in enumerate(shard_paths(prefix, total)) if (i, total) not in found]
    if missing:
        raise FileNotFoundError(f"{prefix}: {len(missing)} of {total} shards are missing, e.g. {missing[0]}")
    return shard_paths(prefix, total)


class ExampleSource:
    """Random access to the decoded examples of ArrayRecord files (a grain RandomAccessDataSource)."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        if not paths:
            raise ValueError("ExampleSource needs at least one ArrayRecord file")
        self.paths = [str(p) for p in paths]
        self._records = grain.sources.ArrayRecordDataSource(self.paths)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return decode(self._records[index])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [decode(r) for r in self._records.__getitems__(indices)]

    def __repr__(self) -> str:
        return f"ExampleSource({len(self.paths)} files)"


def process_files(paths: Sequence[str | os.PathLike], shard_index: int, shard_count: int) -> list[str]:
    """The files process `shard_index` of `shard_count` reads: every shard_count-th one."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in 0..{shard_count - 1}")
    if len(paths) % shard_count:
        raise ValueError(f"{len(paths)} shard files cannot be dealt evenly to {shard_count} processes: write a "
                         "multiple of the process count")
    return [str(p) for p in paths[shard_index::shard_count]]


def process_shard(paths: Sequence[str | os.PathLike], shard_index: int | None = None,
                  shard_count: int | None = None) -> grain.MapDataset:
    """This process's examples (its files only) as a grain MapDataset; defaults to the jax process."""
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    return grain.MapDataset.source(ExampleSource(process_files(paths, shard_index, shard_count)))


def write_columns(columns: Mapping[str, np.ndarray], prefix: str | os.PathLike, num_shards: int) -> list[Path]:
    """`write_shards` for column-major data (`{key: array [n, ...]}`), e.g. a tokenized split."""
    sizes = {k: len(v) for k, v in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"columns have different lengths: {sizes}")
    n = next(iter(sizes.values()))
    return write_shards(_Rows(columns, n), prefix, num_shards)


class _Rows(Sequence):
    """Row i of a column-major dict, without copying the columns."""

    def __init__(self, columns: Mapping[str, np.ndarray], n: int):
        self._columns, self._n = columns, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self._columns.items()}

