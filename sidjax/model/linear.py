"""Projections by a weight, with a backward pass that stays in the compute dtype.

Mixed precision keeps float32 parameters and computes in `config.compute_dtype`. A plain
`einsum(x, w.astype(bf16))` has two costs on XLA's CPU backend, measured with
`python -m bench.lm_step --dtype bfloat16` (docs/results/log.md):

- XLA:CPU runs a bf16 matmul fast (YNNPACK, about 2x its f32 rate on AVX512_BF16) only in the form
  bf16 x bf16 -> f32 with both operands row-major and contracted as [m, k] x [k, n]; any other dot is
  converted to an f32 matmul. Transposes are folded into the dot and become layouts, so the
  transposed operands of the backward pass (x^T g, g w^T) always took the f32 path.
- Autodiff of an f32-accumulating dot hands the backward an f32 cotangent, so its matmuls ran
  in f32 with extra conversions.

`project` computes y = x w in the compute dtype with f32 accumulation, and its custom backward
runs both gradient matmuls in the compute dtype. On CPU a transposed operand is written out
with one padded row or column: padding is an op a layout cannot express, so the copy stays
row-major and the dot keeps the fast form; the padded output row or column is dropped.
Other backends get the plain transposed dot (their compilers pick the layouts themselves).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


_CPU_PAD = 1  # rows / columns added to a transposed operand on CPU (any nonzero count keeps it row-major)


def _physical_transpose(a: jax.Array, pad_axis: int) -> jax.Array:
    """a^T as a row-major array, padded by _CPU_PAD zeros along `pad_axis` of a^T (an output axis)."""
    pads = [(0, 0), (0, 0)]
    pads[pad_axis] = (0, _CPU_PAD)
    return jnp.pad(a.T, pads)


def writes_transposes() -> bool:
    """Whether transposed operands are written out (XLA's CPU backend; elsewhere the compiler lays them out)."""
    return jax.default_backend() == "cpu"


def matmul(a: jax.Array, b: jax.Array, *, transpose_a: bool = False, transpose_b: bool = False,
           write_transposes: bool = True) -> jax.Array:
    """op(a) @ op(b) for 2-D a, b of one dtype, accumulated and returned in float32.

    A transposed operand is copied out first where `writes_transposes()`, unless `write_transposes` is False.
    """
    if not (write_transposes and writes_transposes()):
        dims = (((0 if transpose_a else 1,), (1 if transpose_b else 0,)), ((), ()))
        return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)
    rows = a.shape[1] if transpose_a else a.shape[0]
    cols = b.shape[0] if transpose_b else b.shape[1]
    if transpose_a:
        a = _physical_transpose(a, 0)
    if transpose_b:
        b = _physical_transpose(b, 1)
    out = jnp.matmul(a, b, preferred_element_type=jnp.float32)
    return out[:rows, :cols]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _linear(x: jax.Array, w: jax.Array, transposed: bool, out_dtype: jnp.dtype) -> jax.Array:
    """x [n, k] times w [k, m] (w [m, k] when `transposed`), w cast to x's dtype.

    A transposed w (a tied output layer) is not written out here: its forward also runs at decode sizes,
    a few rows per call, where copying the whole [vocab, hidden] table costs more than the slow dot.
    """
    return matmul(x, w.astype(x.dtype), transpose_b=transposed, write_transposes=False).astype(out_dtype)


def _linear_fwd(x, w, transposed, out_dtype):
    return _linear(x, w, transposed, out_dtype), (x, w)


def _linear_bwd(transposed, out_dtype, residuals, g):
    del out_dtype
    x, w = residuals
    g = g.astype(x.dtype)
    w_low = w.astype(x.dtype)
    dx = matmul(g, w_low, transpose_b=not transposed)
    dw = _weight_gradient(x, g)
    return dx.astype(x.dtype), (dw.T if transposed else dw).astype(w.dtype)


def _weight_gradient(x: jax.Array, g: jax.Array) -> jax.Array:
    """x^T g [k, m] for x [n, k], g [n, m], transposing whichever costs fewer copied elements:
    x (n k), or g and then the product (n m + k m)."""
    n, k = x.shape
    m = g.shape[1]
    if n * k <= n * m + k * m:
        return matmul(x, g, transpose_a=True)
    return matmul(g, x, transpose_a=True).T


_linear.defvjp(_linear_fwd, _linear_bwd)


def project(x: jax.Array, w: jax.Array, contract: int = 1, out_dtype: jnp.dtype | None = None) -> jax.Array:
    """x [..., *in] times w [*in, *out] over the `contract` trailing axes of x, returned in `out_dtype`
    (x's dtype by default)."""
    in_shape, out_shape = w.shape[:contract], w.shape[contract:]
    if x.shape[x.ndim - contract:] != in_shape:
        raise ValueError(f"project: x {x.shape} does not end in the weight's input axes {in_shape}")
    lead = x.shape[:x.ndim - contract]
    flat = _linear(x.reshape(-1, math.prod(in_shape)), w.reshape(math.prod(in_shape), -1), False,
                   jnp.dtype(out_dtype or x.dtype))
    return flat.reshape(*lead, *out_shape)


def project_transposed(x: jax.Array, w: jax.Array, out_dtype: jnp.dtype | None = None) -> jax.Array:
    """x [..., k] times w^T for w [m, k] (a tied embedding as output layer), returned in `out_dtype`."""
    flat = _linear(x.reshape(-1, x.shape[-1]), w, True, jnp.dtype(out_dtype or x.dtype))
    return flat.reshape(*x.shape[:-1], w.shape[0])
