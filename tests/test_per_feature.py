import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sidjax.model.per_feature import add_bias, scale


def _inputs(dtype):
    y = jax.random.normal(jax.random.key(0), (3, 50, 4, 8), jnp.float32)
    param = jax.random.normal(jax.random.key(1), (4, 8), jnp.float32)
    upstream = jax.random.normal(jax.random.key(2), y.shape, jnp.float32)
    return y.astype(dtype), param, upstream.astype(dtype)


PAIRS = [(add_bias, lambda y, p: y + p.astype(y.dtype)), (scale, lambda y, p: y * p.astype(y.dtype))]


@pytest.mark.parametrize("ours, plain", PAIRS)
def test_float32_rows_are_the_plain_expression_bit_for_bit(ours, plain):
    """No cast, no custom backward: a float32 model trains exactly as before."""
    y, param, upstream = _inputs(jnp.float32)

    def grads(f):
        return jax.jit(jax.grad(lambda y, p: jnp.sum(f(y, p) * upstream), (0, 1)))(y, param)

    np.testing.assert_array_equal(ours(y, param), plain(y, param))
    for a, b in zip(grads(ours), grads(plain)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ours, plain", PAIRS)
def test_bfloat16_rows_keep_the_value_and_the_rows_gradient_of_the_plain_expression(ours, plain):
    y, param, upstream = _inputs(jnp.bfloat16)

    def row_grad(f):
        return jax.grad(lambda y: jnp.sum(f(y, param).astype(jnp.float32) * upstream))(y)

    np.testing.assert_array_equal(ours(y, param), plain(y, param))
    np.testing.assert_array_equal(row_grad(ours), row_grad(plain))


def test_bfloat16_rows_give_a_float32_parameter_gradient_summed_in_float32():
    y, param, upstream = _inputs(jnp.bfloat16)
    d_bias = jax.grad(lambda p: jnp.sum(add_bias(y, p).astype(jnp.float32) * upstream))(param)
    d_scale = jax.grad(lambda p: jnp.sum(scale(y, p).astype(jnp.float32) * upstream))(param)
    g, rows = np.asarray(upstream, np.float64), np.asarray(y, np.float64)
    assert d_bias.dtype == d_scale.dtype == jnp.float32
    np.testing.assert_allclose(d_bias, g.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_scale, (g * rows).sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    assert scale(y, param).dtype == add_bias(y, param).dtype == jnp.bfloat16


def test_a_parameter_that_is_not_the_trailing_axes_is_refused():
    y, param, _ = _inputs(jnp.float32)
    with pytest.raises(ValueError, match=r"per-feature parameter \(8, 4\) does not match the trailing axes of \(3, 50, 4, 8\)"):
        add_bias(y, param.T)
