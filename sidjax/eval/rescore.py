"""Re-score the constrained beam search's SIDs with dense item models (a generative + dense hybrid, as LIGER).

The beams come from the SID model(s); each beam's score becomes its SID log-probability plus, per
dense model, its weight x log P_dense(SID), where P_dense(SID) sums the model's next-item
probabilities over the items that carry the SID; then the beams are sorted again. The dense models
(`sasrec`: SASRec, full softmax over items; `markov`: item transition counts) learn item ids
directly, which a SID model sees only through shared codes: they err differently, so the sum ranks
better than either (measured on valid in the README). Only the SIDs the search found are
re-ranked; the dense models cannot add others.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.baselines import markov, sasrec
from sidjax.data.dataset import pad_histories

if TYPE_CHECKING:
    from sidjax.eval.evaluate import Recommendations


class ItemScorer(Protocol):
    """A dense next-item model: log P(SID) from the items carrying it."""

    num_items: int

    def sid_log_probs(self, histories: Sequence[Sequence[int]], items: np.ndarray) -> np.ndarray:
        """log P of SIDs given as their items int32 [n, R, S] (-1 padded): f32 [n, R], -inf where none."""


@functools.partial(jax.jit, static_argnames="graphdef")
def _sasrec_sid_log_probs(graphdef: nnx.GraphDef, params: nnx.State, history: jax.Array, history_len: jax.Array,
                          items: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(nnx.merge(graphdef, params)(history, history_len), axis=-1)
    n, beams, share = items.shape
    picked = jnp.take_along_axis(log_probs, jnp.maximum(items, 0).reshape(n, beams * share), axis=1)
    picked = jnp.where(items >= 0, picked.reshape(n, beams, share), -jnp.inf)
    return jax.nn.logsumexp(picked, axis=-1)


class SasRecScorer:
    """A saved SASRec (one jitted call per batch: softmax, gather and sum in one program)."""

    def __init__(self, model: sasrec.SasRec):
        self.num_items = model.config.num_items
        self.max_len = model.config.max_len
        self._graphdef, self._params = nnx.split(model)

    def sid_log_probs(self, histories: Sequence[Sequence[int]], items: np.ndarray) -> np.ndarray:
        history, lengths = pad_histories(histories, self.max_len)
        return np.asarray(_sasrec_sid_log_probs(self._graphdef, self._params, history, lengths, items))


class MarkovScorer:
    """A saved item Markov chain (host numpy: a sparse row gather per history item)."""

    def __init__(self, chain: markov.MarkovChain):
        self.num_items = chain.num_items
        self.chain = chain

    def sid_log_probs(self, histories: Sequence[Sequence[int]], items: np.ndarray) -> np.ndarray:
        history, lengths = pad_histories(histories, self.chain.config.context)
        probs = self.chain.probs(history, lengths)
        n, beams, share = items.shape
        picked = np.take_along_axis(probs, np.maximum(items, 0).reshape(n, beams * share), axis=1)
        total = np.where(items >= 0, picked.reshape(n, beams, share), 0.0).sum(axis=-1)
        with np.errstate(divide="ignore"):
            return np.log(total).astype(np.float32)


# stage name -> loader of the model that stage saves
SCORERS: dict[str, Callable[[str | os.PathLike], ItemScorer]] = {
    "sasrec": lambda directory: SasRecScorer(sasrec.load(directory)),
    "markov": lambda directory: MarkovScorer(markov.load(directory)),
}


class DenseRescorer:
    """Adds each dense model's weight x log-probability of each beam's SID to its score and re-sorts the beams."""

    def __init__(self, terms: Sequence[tuple[ItemScorer, float]]):
        if not terms:
            raise ValueError("DenseRescorer: needs at least one (model, weight) term")
        for _, weight in terms:
            if weight <= 0:
                raise ValueError(f"DenseRescorer: weights must be > 0, got {weight}")
        counts = {scorer.num_items for scorer, _ in terms}
        if len(counts) != 1:
            raise ValueError(f"DenseRescorer: the dense models cover different item counts {sorted(counts)}")
        self.terms = [(scorer, float(weight)) for scorer, weight in terms]
        self.num_items = counts.pop()

    @classmethod
    def load(cls, models: Sequence[tuple[str, str | os.PathLike, float]]) -> "DenseRescorer":
        """From (stage name, the stage's directory, weight) triples, e.g. ("sasrec", "runs/x/sasrec", 0.3)."""
        unknown = [stage for stage, _, _ in models if stage not in SCORERS]
        if unknown:
            raise ValueError(f"DenseRescorer: no dense model of stage {unknown[0]!r}; known: {sorted(SCORERS)}")
        return cls([(SCORERS[stage](directory), weight) for stage, directory, weight in models])

    def sid_log_probs(self, histories: Sequence[Sequence[int]], leaf_items: np.ndarray) -> np.ndarray:
        """The weighted sum of the models' log P(SID), SIDs given as their items int [n, R, S] (-1 padded): f32 [n, R]."""
        leaf_items = np.asarray(leaf_items, np.int32)
        if leaf_items.max(initial=-1) >= self.num_items:
            raise ValueError(f"DenseRescorer: item id {int(leaf_items.max())} is beyond the dense models' "
                             f"{self.num_items} items; they were trained on another dataset")
        return sum(weight * scorer.sid_log_probs(histories, leaf_items) for scorer, weight in self.terms)

    def rescore(self, histories: Sequence[Sequence[int]], result: "Recommendations", leaf_items: np.ndarray
                ) -> "Recommendations":
        """`result` (beams whose leaves are rows of `leaf_items`) re-scored, best first.

        Invalid beams keep their score and go last.
        """
        items = np.asarray(leaf_items)[np.maximum(result.leaves, 0)]
        fused = np.where(result.valid, result.scores + self.sid_log_probs(histories, items), -np.inf)
        order = np.argsort(-fused, axis=1, kind="stable")

        def take(array: np.ndarray) -> np.ndarray:
            index = order.reshape(order.shape + (1,) * (array.ndim - 2))
            return np.take_along_axis(array, index, axis=1)

        scores = np.where(result.valid, fused, result.scores).astype(np.float32)
        return dataclasses.replace(result, leaves=take(result.leaves), codes=take(result.codes), scores=take(scores),
                                   valid=take(result.valid))
