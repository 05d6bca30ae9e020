"""`config.data` -> RecDataset, whatever the source."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import ml_collections

from sidjax.data import amazon, lcrec, minionerec
from sidjax.data.dataset import RecDataset
from sidjax.data.splits import resplit
from sidjax.utils.settings import settings_from

# data.name -> (folder inside the package, the layout its files are in)
SHIPPED = {
    "Industrial_and_Scientific": ("industrial_and_scientific", "recbole"),
    "Office": ("office_2014", "lcrec"),
}


def shipped_dir(name: str = "Industrial_and_Scientific") -> Path:
    """The files of shipped dataset `name` inside the installed package."""
    if name not in SHIPPED:
        raise ValueError(f"no dataset '{name}' is shipped (shipped: {', '.join(SHIPPED)})")
    return Path(str(resources.files("sidjax.data") / SHIPPED[name][0]))


def layout(cfg: ml_collections.ConfigDict) -> str:
    """The file layout `cfg` points at: a shipped dataset's own, else the source's."""
    return SHIPPED[cfg.name][1] if cfg.source == "shipped" else cfg.source


def load_dataset(cfg: ml_collections.ConfigDict) -> RecDataset:
    """The dataset `cfg` (a `config.data` section) describes; sources are listed in `sidjax.configs.data`."""
    if cfg.source == "mix":
        from sidjax.data.mix import merge

        return merge({name: load_dataset(sub) for name, sub in cfg.domains.items()}, tuple(cfg.mixture))
    if cfg.source == "tfds":
        from sidjax.data import tfds_copy  # tensorflow-datasets takes a second to import: only when read

        return tfds_copy.load(cfg)
    directory = shipped_dir(cfg.name) if cfg.source == "shipped" else Path(cfg.path)
    kind = layout(cfg)
    if kind == "lcrec":
        return lcrec.load_lcrec_dir(directory, cfg.name, cfg.max_history, cfg.index_file)
    if kind == "recbole":
        dataset = minionerec.load_recbole_dir(directory, cfg.name, cfg.max_history)
    elif kind == "minionerec_csv":
        dataset = minionerec.load_csv_dir(directory, cfg.name, cfg.max_history)
    elif kind in ("amazon2018", "amazon2023"):
        dataset = amazon.load_raw(directory, cfg.name, settings_from(amazon.Rules, cfg), version=kind)
    else:
        raise ValueError(f"data source '{cfg.source}' has no loader")
    return resplit(dataset, cfg.split, cfg.max_history, directory)
