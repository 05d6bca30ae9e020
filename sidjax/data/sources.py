"""`config.data` -> RecDataset, whatever the source."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import ml_collections

from sidjax.data import amazon, minionerec
from sidjax.data.dataset import RecDataset
from sidjax.utils.settings import settings_from


def shipped_dir() -> Path:
    """The Industrial_and_Scientific files inside the installed package."""
    return Path(str(resources.files("sidjax.data") / "industrial_and_scientific"))


def load_dataset(cfg: ml_collections.ConfigDict) -> RecDataset:
    """The dataset `cfg` (a `config.data` section) describes; sources are listed in `sidjax.configs.data`."""
    if cfg.source == "shipped":
        return minionerec.load_recbole_dir(shipped_dir(), cfg.name, cfg.max_history)
    if cfg.source == "recbole":
        return minionerec.load_recbole_dir(cfg.path, cfg.name, cfg.max_history)
    if cfg.source == "minionerec_csv":
        return minionerec.load_csv_dir(cfg.path, cfg.name, cfg.max_history)
    if cfg.source in ("amazon2018", "amazon2023"):
        return amazon.load_raw(cfg.path, cfg.name, settings_from(amazon.Rules, cfg), version=cfg.source)
    raise ValueError(f"data source '{cfg.source}' has no loader")
