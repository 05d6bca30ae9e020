"""`project`'s custom backward equals autodiff of the plain einsum it replaces.

float32: the same sums in another order (CPU's physical transposes, padded), so equal to float32 rounding.
bfloat16: the reference is autodiff of the f32 einsum on the same bf16-rounded inputs; the custom backward
rounds its cotangent and outputs to bf16 (as PyTorch autocast does), so it agrees to bf16 accuracy
(relative rounding 2^-9 per op): the bound is 2% of each gradient's scale.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sidjax.model import linear
from sidjax.model.linear import matmul, project, project_transposed

F32_TOL = 1e-5
BF16_TOL = 0.02


def _inputs(shape_x, shape_w, seed=0):
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    return jax.random.normal(kx, shape_x), jax.random.normal(kw, shape_w), kg


def _reference_grads(spec, x, w, g):
    """Autodiff of the plain einsum in float32 (inputs already rounded to the compute dtype)."""
    return jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w) * g), argnums=(0, 1))(x, w)


def _relative_error(a, b):
    return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
@pytest.mark.parametrize("spec,shape_x,shape_w,contract", [
    ("bte,ehd->bthd", (3, 5, 16), (16, 4, 8), 1),  # q / k / v projections
    ("bthd,hde->bte", (3, 5, 4, 8), (4, 8, 16), 2),  # attention output
    ("bte,ef->btf", (3, 5, 16), (16, 24), 1),  # MLP up: the weight gradient transposes x
    ("btf,fe->bte", (3, 5, 48), (48, 8), 1),  # MLP down: ... transposes the narrower g, then the product
])
def test_project_matches_the_einsum_and_its_gradients(dtype, tol, spec, shape_x, shape_w, contract):
    x, w, kg = _inputs(shape_x, shape_w)
    x = x.astype(dtype)
    w_rounded = w.astype(dtype).astype(jnp.float32)
    y = project(x, w, contract)
    out_shape = jnp.einsum(spec, x.astype(jnp.float32), w_rounded).shape
    g = jax.random.normal(kg, out_shape).astype(dtype).astype(jnp.float32)
    assert y.dtype == dtype and y.shape == out_shape
    reference = jnp.einsum(spec, x.astype(jnp.float32), w_rounded)
    assert _relative_error(y, reference) < tol
    dx, dw = jax.grad(lambda x, w: jnp.sum(project(x, w, contract).astype(jnp.float32) * g), argnums=(0, 1))(x, w)
    ref_dx, ref_dw = _reference_grads(spec, x.astype(jnp.float32), w_rounded, g)
    assert dx.dtype == dtype and dw.dtype == jnp.float32  # the master weight's gradient stays float32
    assert _relative_error(dx, ref_dx) < tol
    assert _relative_error(dw, ref_dw) < tol


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_project_transposed_is_a_tied_output_layer(dtype, tol):
    hidden, embed, kg = _inputs((2, 7, 16), (40, 16))
    hidden = hidden.astype(dtype)
    logits = project_transposed(hidden, embed, jnp.float32)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 7, 40)
    e_rounded = embed.astype(dtype).astype(jnp.float32)
    assert _relative_error(logits, jnp.einsum("bte,ve->btv", hidden.astype(jnp.float32), e_rounded)) < tol
    g = jax.random.normal(kg, logits.shape)
    dh, de = jax.grad(lambda h, e: jnp.sum(project_transposed(h, e, jnp.float32) * g), argnums=(0, 1))(hidden, embed)
    ref_dh, ref_de = _reference_grads("bte,ve->btv", hidden.astype(jnp.float32), e_rounded,
                                      g.astype(dtype).astype(jnp.float32))
    assert _relative_error(dh, ref_dh) < tol
    assert _relative_error(de, ref_de) < tol


@pytest.mark.parametrize("written", [True, False], ids=["cpu_written_transposes", "other_backends_dot_general"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_transposes_exactly_as_numpy(transpose_a, transpose_b, written, monkeypatch):
    monkeypatch.setattr(linear, "writes_transposes", lambda: written)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 9)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    a = a.T.copy() if transpose_a else a
    b = b.T.copy() if transpose_b else b
    expected = (a.T if transpose_a else a) @ (b.T if transpose_b else b)
    got = matmul(jnp.asarray(a), jnp.asarray(b), transpose_a=transpose_a, transpose_b=transpose_b)
    assert got.shape == (6, 6) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_project_refuses_a_weight_whose_input_axes_do_not_match():
    with pytest.raises(ValueError, match="input axes"):
        project(jnp.ones((2, 5, 16)), jnp.ones((8, 4)))
