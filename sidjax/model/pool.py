"""Texts -> vectors by a causal LM: the `lm_mean_pool` item embedding of the SID stage."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sidjax.model.transformer import positions_from_mask
from sidjax.utils.progress import progress


@nnx.jit
def _pooled(model: nnx.Module, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    hidden, _ = model.hidden_states(tokens, positions_from_mask(mask), attention_mask=mask)
    weights = mask.astype(jnp.float32)[..., None]
    return (hidden.astype(jnp.float32) * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


def lm_mean_pool(
    model: nnx.Module,
    encode: Callable[[str], Sequence[int]],
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    pad_id: int = 0,
) -> np.ndarray:
    """float32 [len(texts), hidden]: mean of `model.hidden_states` over each text's tokens.

    Every batch has the static shape [batch_size, max_length] (left padding, as
    the model's contract expects; the last batch is filled with padding rows),
    so the pooled forward compiles once.
    """
    out = []
    for start in progress(range(0, len(texts), batch_size), desc="embed items", unit="batch"):
        chunk = texts[start : start + batch_size]
        tokens = np.full((batch_size, max_length), pad_id, dtype=np.int32)
        mask = np.zeros((batch_size, max_length), dtype=bool)
        for row, text in enumerate(chunk):
            ids = list(encode(text))[:max_length]
            if not ids:
                raise ValueError(f"item text {start + row} encodes to no tokens: {text[:60]!r}")
            tokens[row, max_length - len(ids) :] = ids
            mask[row, max_length - len(ids) :] = True
        out.append(np.asarray(_pooled(model, jnp.asarray(tokens), jnp.asarray(mask)))[: len(chunk)])
    return np.concatenate(out, axis=0)
