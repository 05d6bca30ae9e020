"""A dataset's TFDS copy: built once by tensorflow-datasets builders, read by every host, no TensorFlow.

`build(dataset, cfg)` writes the RecDataset that `config.data` section `cfg` describes (loaded by
`sources.load_dataset` from any source) into `cfg.data_dir` as three ArrayRecord datasets, each
under the builder config `cfg.name`, rows in the dataset's own order (splits stay in target-time
order, item row i is item i):

    sidjax_samples/<name>:1.0.0     splits train, valid, test: users, history (-1 padded), history_len, target
    sidjax_items/<name>:1.0.0       split items: title, description, brand, categories, sid (paper SIDs or [])
    sidjax_sequences/<name>:1.0.0   split sequences: user, items (time-ordered)

`load(cfg)` (`data.source = "tfds"`) reads them back into the same RecDataset; `split_source` is a
split's rows as a grain data source (random access), which `loader.batches` takes as it is.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Iterator

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from sidjax.data.dataset import SPLITS, RecDataset, Split
from sidjax.utils.catalog import Item
from sidjax.utils.errors import DataError

FORMAT_VERSION = "1.0.0"
ITEMS, SEQUENCES = "items", "sequences"  # the one split of each of those tables
BUILD_COMMAND = "python -m experiments.build_tfds --config=<the run's config> --config.data.data_dir={data_dir}"
# Keys of `config.data` that say where the data is, not what it is: a run may differ from its build there.
_PLACE_KEYS = ("source", "path", "data_dir")
_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Item))


@dataclasses.dataclass(eq=False)
class _Config(tfds.core.BuilderConfig):
    """One dataset: its name and the `config.data` section it was built from (JSON-plain)."""

    data: dict[str, Any] = dataclasses.field(default_factory=dict)


class _Table(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What the three tables share. Not registered: readers find the copy from its files alone."""

    VERSION = tfds.core.Version(FORMAT_VERSION)
    RELEASE_NOTES = {FORMAT_VERSION: "samples (users, history, history_len, target), items (text, sid), sequences"}
    SPLIT_NAMES: tuple[str, ...] = ()

    def __init__(self, *, dataset: RecDataset, **kwargs: Any):
        self._dataset = dataset  # before the base class reads `_info`
        super().__init__(**kwargs)

    def _features(self) -> dict[str, tfds.features.FeatureConnector]:
        raise NotImplementedError

    def _metadata(self) -> dict[str, Any]:
        """Saved beside the table (metadata.json): the build's `config.data`, which a run must match."""
        return {"data": self.builder_config.data}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(self._features()),
            disable_shuffling=True,  # keep the dataset's order
            metadata=tfds.core.MetadataDict(self._metadata()),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        return {split: self._generate_examples(split) for split in self.SPLIT_NAMES}


class _Samples(_Table, skip_registration=True):
    name = "sidjax_samples"
    SPLIT_NAMES = SPLITS

    def _features(self):
        width = self._dataset.splits[SPLITS[0]].history.shape[1]
        return {"users": tfds.features.Scalar(np.int64),
                "history": tfds.features.Tensor(shape=(width,), dtype=np.int32),
                "history_len": tfds.features.Scalar(np.int32), "target": tfds.features.Scalar(np.int32)}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        s = self._dataset.splits[split]
        for i in range(len(s)):
            yield i, {"users": s.users[i], "history": s.history[i], "history_len": s.history_len[i],
                      "target": s.target[i]}


class _Items(_Table, skip_registration=True):
    name = "sidjax_items"
    SPLIT_NAMES = (ITEMS,)

    def _features(self):
        return {**{f: tfds.features.Text() for f in _TEXT_FIELDS}, "sid": tfds.features.Sequence(tfds.features.Text())}

    def _metadata(self):
        return {**super()._metadata(), "paper_sids_origin": self._dataset.paper_sids_origin,
                "has_paper_sids": self._dataset.paper_sids is not None}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        sids = self._dataset.paper_sids or {}
        for i, item in enumerate(self._dataset.items):
            yield i, {**dataclasses.asdict(item), "sid": list(sids.get(i, ()))}


class _Sequences(_Table, skip_registration=True):
    name = "sidjax_sequences"
    SPLIT_NAMES = (SEQUENCES,)

    def _features(self):
        return {"user": tfds.features.Scalar(np.int64), "items": tfds.features.Tensor(shape=(None,), dtype=np.int32)}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (user, seq) in enumerate(self._dataset.sequences.items()):
            yield i, {"user": user, "items": np.asarray(seq, dtype=np.int32)}


_TABLES = (_Samples, _Items, _Sequences)


def build(dataset: RecDataset, cfg: ml_collections.ConfigDict) -> list[Path]:
    """Write `dataset` (loaded from `config.data` section `cfg`) into `cfg.data_dir`, replacing an
    earlier copy of the same name; returns each table's directory."""
    config = _Config(name=cfg.name, version=FORMAT_VERSION, description=f"sidjax dataset {cfg.name}",
                     data=json.loads(cfg.to_json()))
    download = tfds.download.DownloadConfig(try_download_gcs=False,  # no network: build from our files only
                                            download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD)
    out = []
    with tempfile.TemporaryDirectory() as nothing_to_download:  # else TFDS leaves <data_dir>/downloads/
        for table in _TABLES:
            builder = table(dataset=dataset, config=config, data_dir=cfg.data_dir, file_format="array_record")
            builder.download_and_prepare(download_dir=nothing_to_download, download_config=download)
            out.append(Path(builder.data_dir))
    return out


def _builder(cfg: ml_collections.ConfigDict, table: str) -> tfds.core.DatasetBuilder:
    """The read-only builder of one table of the copy, checked against the run's `config.data`."""
    where = Path(cfg.data_dir) / table / cfg.name / FORMAT_VERSION
    if not (where / "dataset_info.json").is_file():
        raise DataError(where, f"no TFDS copy (format {FORMAT_VERSION}) of dataset '{cfg.name}' here; build it first: "
                               + BUILD_COMMAND.format(data_dir=cfg.data_dir))
    builder = tfds.builder(f"{table}/{cfg.name}:{FORMAT_VERSION}", data_dir=cfg.data_dir)
    built, run = builder.info.metadata["data"], json.loads(cfg.to_json())
    for key in sorted(set(built) | set(run)):
        if key not in _PLACE_KEYS and built.get(key) != run.get(key):
            raise DataError(where, f"built with data.{key} = {built.get(key)!r}, but config key 'data.{key}' is "
                                   f"{run.get(key)!r}; set it to the build's value or rebuild the copy")
    return builder


def _dtypes(builder: tfds.core.DatasetBuilder) -> dict[str, type]:
    """Each feature's own dtype: the files give every integer back as int64."""
    return {key: feature.np_dtype for key, feature in builder.info.features.items()}


def split_source(cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
    """The rows of samples split `split` (`loader.split_records`' keys and dtypes), each read from the
    files when asked for: `loader.batches` takes it as it is, and each process reads its own rows only."""
    builder = _builder(cfg, _Samples.name)
    dtypes = _dtypes(builder)
    return grain.MapDataset.source(builder.as_data_source(split)).map(
        lambda row: {key: np.asarray(value, dtypes[key]) for key, value in row.items()})


def _read_all(builder: tfds.core.DatasetBuilder, split: str) -> list[dict[str, Any]]:
    source = builder.as_data_source(split)
    return source.__getitems__(range(len(source)))


def load(cfg: ml_collections.ConfigDict) -> RecDataset:
    """The RecDataset of the copy named `cfg.name` in `cfg.data_dir`, equal to the one it was built from."""
    samples = _builder(cfg, _Samples.name)
    dtypes = _dtypes(samples)
    splits = {}
    for split in SPLITS:
        rows = _read_all(samples, split)
        splits[split] = Split(**{key: np.asarray([r[key] for r in rows], dtype) for key, dtype in dtypes.items()})
    items_builder = _builder(cfg, _Items.name)
    item_rows = _read_all(items_builder, ITEMS)
    items = tuple(Item(**{f: r[f].decode("utf-8") for f in _TEXT_FIELDS}) for r in item_rows)
    meta = items_builder.info.metadata
    paper_sids = None
    if meta["has_paper_sids"]:
        paper_sids = {i: tuple(s.decode("utf-8") for s in r["sid"]) for i, r in enumerate(item_rows)}
    sequence_rows = _read_all(_builder(cfg, _Sequences.name), SEQUENCES)
    sequences = {int(r["user"]): tuple(r["items"].tolist()) for r in sequence_rows}
    return RecDataset(name=cfg.name, items=items, sequences=sequences, splits=splits, paper_sids=paper_sids,
                      paper_sids_origin=meta["paper_sids_origin"])
