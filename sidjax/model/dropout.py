"""Inverted dropout whose keep decisions are random bytes, four to each 32-bit draw.

XLA's CPU backend runs threefry as a rolled loop over every element it draws: a 32-bit draw per
element was 12 % of `industrial_scratch`'s SFT step (nine dropout sites; docs/results/log.md, stop 44).
One byte per element is a quarter of the draws. The rate is therefore a multiple of 1/256:
`keep_levels(rate)` of the 256 byte values keep an element (0.3 runs as 77/256 = 0.3008), and
kept elements are scaled by 256 / keep_levels, so the mean is exact.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

LEVELS = 256  # values of one random byte


def keep_levels(rate: float) -> int:
    """How many of the 256 byte values keep an element at dropout `rate` (ValueError where none or all would)."""
    levels = round((1.0 - rate) * LEVELS)
    if rate > 0.0 and not 1 <= levels < LEVELS:
        raise ValueError(f"dropout rate {rate} rounds to {1 - levels / LEVELS} in steps of 1/{LEVELS}: "
                         f"use 0, or a rate in [{1 / (2 * LEVELS)}, {1 - 1 / (2 * LEVELS)})")
    return levels


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Zero each element of x with probability `rate` (in steps of 1/256) and scale the rest to keep the mean.

    The identity without a key or at rate 0, so deterministic passes hold no random-number ops.
    """
    if key is None or rate == 0.0:
        return x
    levels = keep_levels(rate)
    n = x.size
    words = jax.random.bits(key, (-(-n // 4),), jnp.uint32)
    draws = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:n].reshape(x.shape)
    return jnp.where(draws < levels, x * (LEVELS / levels), jnp.zeros((), x.dtype)).astype(x.dtype)
