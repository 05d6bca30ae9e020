"""A Markov chain over item ids: which item follows the last few, counted on the train split.

Each train sample adds one transition, from its latest history item to its target (a user's
samples are prefixes of one sequence, so each consecutive pair counts once). A row is smoothed
toward the train popularity (add-one, so every item keeps some probability) with `smoothing`
pseudo-counts, and the rows of the last `context` history items are mixed with weights decay**k
(k = 0 for the latest). It knows which item follows which, which the SID models see only
through shared codes, so it re-scores their beams well (`eval.rescore`, measured in the README).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable

import jax
import ml_collections
import numpy as np
import scipy.sparse

from sidjax.baselines import item_metrics
from sidjax.baselines.popularity import train_counts
from sidjax.data.dataset import Split

MODEL_CONFIG = "markov_config.json"
COUNTS = "markov_counts.npz"


@dataclasses.dataclass(frozen=True)
class MarkovConfig:
    num_items: int
    smoothing: float  # pseudo-counts of the popularity prior in each row
    context: int  # how many of the latest history items are mixed
    decay: float  # weight of the k-th latest item: decay**k


class MarkovChain:
    """Transition counts [items, items] and train popularity, with the mixing rule of `MarkovConfig`."""

    def __init__(self, config: MarkovConfig, counts: scipy.sparse.csr_matrix, popularity: np.ndarray):
        if counts.shape != (config.num_items, config.num_items) or popularity.shape != (config.num_items,):
            raise ValueError(f"MarkovChain: counts {counts.shape} and popularity {popularity.shape} must cover "
                             f"{config.num_items} items")
        self.config = config
        self.counts = counts.tocsr()
        self.popularity = popularity.astype(np.int64)
        self._prior = (self.popularity + 1.0) / (self.popularity + 1.0).sum()
        self._row_totals = np.asarray(self.counts.sum(axis=1)).ravel()

    @property
    def num_items(self) -> int:
        return self.config.num_items

    def probs(self, history: np.ndarray, history_len: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        """P(next item) f64 [n, items] for histories int [n, H] (time-ordered, `history_len` real items each).

        `leave_out` int [n]: each row's own train transition (latest history item -> this item) is taken
        out of the counts first, so a train sample is predicted from the other users' transitions, as a
        valid or test sample is (what a teacher for its own training data needs).
        """
        history = np.asarray(history)
        history_len = np.asarray(history_len)
        n = history.shape[0]
        real = np.arange(history.shape[1])[None, :] < history_len[:, None]
        outside = history[real & ((history < 0) | (history >= self.num_items))]
        if outside.size:
            raise ValueError(f"MarkovChain: history item {int(outside[0])} is outside the chain's {self.num_items} "
                             "items; it was counted on another dataset")
        c = self.config
        mixed = np.zeros((n, self.num_items))
        weights = np.zeros(n)
        for k in range(c.context):
            position = history_len - 1 - k
            present = position >= 0
            items = history[np.arange(n), np.maximum(position, 0)]
            counts = self.counts[items].toarray()
            totals = self._row_totals[items]
            if k == 0 and leave_out is not None:
                own = np.minimum(counts[np.arange(n), leave_out], 1.0) * present
                counts[np.arange(n), leave_out] -= own
                totals = totals - own
            rows = (counts + c.smoothing * self._prior) / (totals + c.smoothing)[:, None]
            weight = np.where(present, c.decay ** k, 0.0)
            mixed += weight[:, None] * rows
            weights += weight
        # An empty history falls back to the popularity prior.
        return np.where(weights[:, None] > 0, mixed / np.maximum(weights, 1e-30)[:, None], self._prior[None, :])

    def top_items(self, split: Split, k: int, batch_size: int) -> np.ndarray:
        """The k most probable next items per sample, best first (ties: lower id): int32 [n, k]."""
        out = [np.argsort(-self.probs(split.history[i:i + batch_size], split.history_len[i:i + batch_size]),
                          axis=1, kind="stable")[:, :k]
               for i in range(0, len(split), batch_size)]
        return np.concatenate(out).astype(np.int32)

    def evaluate(self, split: Split, ks: Iterable[int], batch_size: int) -> dict[str, float]:
        ks = tuple(ks)
        return item_metrics(self.top_items(split, max(ks), batch_size), split.target, ks)


def fit(train: Split, num_items: int, c: ml_collections.ConfigDict) -> MarkovChain:
    """Count the train split's transitions (`c`: config.baselines.markov)."""
    has_history = train.history_len > 0
    rows = np.flatnonzero(has_history)
    latest = train.history[rows, train.history_len[rows] - 1]
    counts = scipy.sparse.csr_matrix((np.ones(rows.size), (latest, train.target[rows])),
                                     shape=(num_items, num_items))
    config = MarkovConfig(num_items=num_items, smoothing=float(c.smoothing), context=int(c.context),
                          decay=float(c.decay))
    return MarkovChain(config, counts, train_counts(train, num_items))


def save(chain: MarkovChain, directory: str | os.PathLike) -> None:
    """`markov_config.json` and the counts (`markov_counts.npz`), for `load`; process 0 writes."""
    if jax.process_index() != 0:
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    coo = chain.counts.tocoo()
    np.savez_compressed(directory / COUNTS, sources=coo.row.astype(np.int32), targets=coo.col.astype(np.int32),
                        counts=coo.data, popularity=chain.popularity)
    (directory / MODEL_CONFIG).write_text(json.dumps(dataclasses.asdict(chain.config), indent=2), encoding="utf-8")


def load(directory: str | os.PathLike) -> MarkovChain:
    """The chain that `save` wrote to `directory` (a `markov` stage's directory)."""
    directory = Path(directory)
    config_path = directory / MODEL_CONFIG
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: no Markov chain here (the `markov` stage writes it)")
    config = MarkovConfig(**json.loads(config_path.read_text(encoding="utf-8")))
    with np.load(directory / COUNTS) as saved:
        counts = scipy.sparse.csr_matrix((saved["counts"], (saved["sources"], saved["targets"])),
                                         shape=(config.num_items, config.num_items))
        return MarkovChain(config, counts, saved["popularity"])
