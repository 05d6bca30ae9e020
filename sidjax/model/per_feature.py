"""Per-feature parameters (a bias, a norm's scale) applied in the compute dtype, whose gradient is one
float32 sum over the rows.

Mixed precision keeps such a parameter in float32 and applies it cast to the compute dtype. Autodiff of
`y + b.astype(bf16)` (or `y * s.astype(bf16)`) hands the cast a bfloat16 sum over every row; XLA's CPU
backend computes it as a conversion of the whole cotangent to float32 and then a two-stage reduction
(a reduce-window of 32 rows, then a reduce), both slow on large row counts. Here the backward sums
`g` (or `g * y`) over the rows in float32 in one reduction that XLA fuses with the product: a
`bench.rqvae` epoch about 25 % faster, train steps a few percent (docs/results/log.md), and a
parameter gradient at least as precise as before. Without a cast (a float32 model) the plain
expression and its autodiff stay: the custom backward would only sum in another order, and its last
bits trained other float32 demo models than before.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _row_axes(y: jax.Array, param: jax.Array) -> tuple[int, ...]:
    """The leading axes of `y` that `param` (its trailing axes) is broadcast over."""
    if y.shape[y.ndim - param.ndim:] != param.shape:
        raise ValueError(f"per-feature parameter {param.shape} does not match the trailing axes of {y.shape}")
    return tuple(range(y.ndim - param.ndim))


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y + bias over y's trailing axes, in y's dtype."""
    _row_axes(y, bias)
    return y + bias if bias.dtype == y.dtype else _cast_add_bias(y, bias)


@jax.custom_vjp
def _cast_add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
    return _cast_add_bias(y, bias), bias


def _add_bias_bwd(bias, g):
    return g, jnp.sum(g, axis=_row_axes(g, bias), dtype=jnp.float32).astype(bias.dtype)


_cast_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def scale(y: jax.Array, factor: jax.Array) -> jax.Array:
    """y * factor over y's trailing axes, in y's dtype."""
    _row_axes(y, factor)
    return y * factor if factor.dtype == y.dtype else _cast_scale(y, factor)


@jax.custom_vjp
def _cast_scale(y: jax.Array, factor: jax.Array) -> jax.Array:
    return y * factor.astype(y.dtype)


def _scale_fwd(y, factor):
    return _cast_scale(y, factor), (y, factor)


def _scale_bwd(residuals, g):
    y, factor = residuals
    d_factor = jnp.sum(g.astype(jnp.float32) * y.astype(jnp.float32), axis=_row_axes(y, factor))
    return g * factor.astype(g.dtype), d_factor.astype(factor.dtype)


_cast_scale.defvjp(_scale_fwd, _scale_bwd)
