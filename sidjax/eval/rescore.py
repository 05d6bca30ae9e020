"""Re-score the constrained beam search's SIDs with a dense item model (a generative + dense hybrid, as LIGER).

The beams come from the SID model(s); each beam's score becomes its SID log-probability plus
`weight` x log P_dense(SID), where P_dense(SID) sums the dense model's softmax over the items that
carry the SID, and the beams are sorted again. The dense model (SASRec, full softmax over items)
learns item ids directly, which a SID model sees only through shared codes: the two err differently,
so the sum ranks better than either (measured on valid in the README). Only the SIDs the search
found are re-ranked; the dense model cannot add others.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.baselines import sasrec
from sidjax.data.dataset import pad_histories

if TYPE_CHECKING:
    from sidjax.eval.evaluate import Recommendations


@functools.partial(jax.jit, static_argnames="graphdef")
def _sid_log_probs(graphdef: nnx.GraphDef, params: nnx.State, history: jax.Array, history_len: jax.Array,
                   items: jax.Array) -> jax.Array:
    """log P_dense of each beam's SID f32 [n, R], from its items int32 [n, R, S] (-1 padded)."""
    log_probs = jax.nn.log_softmax(nnx.merge(graphdef, params)(history, history_len), axis=-1)
    n, beams, share = items.shape
    picked = jnp.take_along_axis(log_probs, jnp.maximum(items, 0).reshape(n, beams * share), axis=1)
    picked = jnp.where(items >= 0, picked.reshape(n, beams, share), -jnp.inf)
    return jax.nn.logsumexp(picked, axis=-1)


class DenseRescorer:
    """Adds `weight` x a SASRec's log-probability of each beam's SID to its score and re-sorts the beams."""

    def __init__(self, model: sasrec.SasRec, weight: float):
        if weight <= 0:
            raise ValueError(f"DenseRescorer: weight must be > 0, got {weight}")
        self.weight = float(weight)
        self.num_items = model.config.num_items
        self.max_len = model.config.max_len
        self._graphdef, self._params = nnx.split(model)

    @classmethod
    def load(cls, directory: str | os.PathLike, weight: float) -> "DenseRescorer":
        """The SASRec saved by a `sasrec` stage in `directory`."""
        return cls(sasrec.load(directory), weight)

    def sid_log_probs(self, histories: Sequence[Sequence[int]], leaf_items: np.ndarray) -> np.ndarray:
        """log P_dense of SIDs given as their items int [n, R, S] (-1 padded): f32 [n, R], -inf where none."""
        leaf_items = np.asarray(leaf_items, np.int32)
        if leaf_items.max(initial=-1) >= self.num_items:
            raise ValueError(f"DenseRescorer: item id {int(leaf_items.max())} is beyond the dense model's "
                             f"{self.num_items} items; it was trained on another dataset")
        history, lengths = pad_histories(histories, self.max_len)
        return np.asarray(_sid_log_probs(self._graphdef, self._params, history, lengths, leaf_items))

    def rescore(self, histories: Sequence[Sequence[int]], result: "Recommendations", leaf_items: np.ndarray
                ) -> "Recommendations":
        """`result` (beams whose leaves are rows of `leaf_items`) re-scored, best first.

        Invalid beams keep their score and go last.
        """
        items = np.asarray(leaf_items)[np.maximum(result.leaves, 0)]
        dense = self.sid_log_probs(histories, items)
        fused = np.where(result.valid, result.scores + self.weight * dense, -np.inf)
        order = np.argsort(-fused, axis=1, kind="stable")

        def take(array: np.ndarray) -> np.ndarray:
            index = order.reshape(order.shape + (1,) * (array.ndim - 2))
            return np.take_along_axis(array, index, axis=1)

        scores = np.where(result.valid, fused, result.scores).astype(np.float32)
        return dataclasses.replace(result, leaves=take(result.leaves), codes=take(result.codes), scores=take(scores),
                                   valid=take(result.valid))
