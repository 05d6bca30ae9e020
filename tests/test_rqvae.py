"""RQ-VAE invariants: quantized = sum of chosen codes, straight-through gradients, determinism, save/load,
the encoder in float32 and bfloat16."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.sid import rqvae as R

CONFIG = R.RQVAEConfig(input_dim=12, hidden=(16,), code_dim=4, levels=3, codebook_size=8)


def _data(n=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, CONFIG.input_dim)).astype(np.float32)


def _trained(seed=0, epochs=3):
    model = R.RQVAE(CONFIG, rngs=nnx.Rngs(seed))
    train = R.TrainConfig(epochs=epochs, batch_size=16, learning_rate=1e-2, weight_decay=0.0, kmeans_iters=5,
                          dead_code_every=2, report_every=1, seed=seed)
    reports = []
    R.train(model, _data(), train, report=lambda epoch, m: reports.append((epoch, m)))
    return model, reports


@pytest.fixture(scope="module")
def trained():
    return _trained()


def test_quantized_is_the_sum_of_chosen_codes(trained):
    model, reports = trained
    x = jnp.asarray(_data())
    z = model.encoder(x)
    q = R.residual_quantize(model.codebooks[...], z, CONFIG.beta)
    codes = np.asarray(q.codes)
    assert codes.shape == (40, 3) and codes.min() >= 0 and codes.max() < CONFIG.codebook_size
    books = np.asarray(model.codebooks[...])
    expected = sum(books[level][codes[:, level]] for level in range(3))
    np.testing.assert_allclose(np.asarray(q.quantized), expected, atol=1e-5)
    # each level picks the code nearest to its residual (brute force)
    residual = np.asarray(z)
    for level in range(3):
        d = ((residual[:, None] - books[level][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, level], d.argmin(1))
        residual = residual - books[level][codes[:, level]]
    assert [e for e, _ in reports] == [1, 2, 3] and "dead_codes" in reports[1][1]
    np.testing.assert_array_equal(R.encode(model, _data()).codes, codes)


def test_straight_through_gradient_is_identity():
    books = jax.random.normal(jax.random.key(0), (2, 5, 3))
    z = jax.random.normal(jax.random.key(1), (4, 3))
    w = jax.random.normal(jax.random.key(2), (4, 3))
    grad = jax.grad(lambda z: jnp.sum(R.residual_quantize(books, z, 0.25).quantized * w))(z)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(w), atol=1e-6)


def test_same_seed_same_codes(trained):
    model, _ = trained
    again, _ = _trained()
    np.testing.assert_array_equal(R.encode(model, _data()).codes, R.encode(again, _data()).codes)


def test_dead_codes_are_reseeded_from_residuals():
    model = R.RQVAE(CONFIG, rngs=nnx.Rngs(0))
    model.codebooks[...] = model.codebooks[...].at[0, 3].set(1e6)  # nobody can pick it
    encoded = R.encode(model, _data())
    assert 3 not in encoded.codes[:, 0]
    dead = R.reseed_dead_codes(model, encoded, jax.random.key(0))
    assert dead >= 1
    new = np.asarray(model.codebooks[...][0, 3])
    assert np.isclose(np.abs(encoded.residuals[:, 0] - new).sum(1), 0, atol=1e-5).any()


def test_epoch_batches_cover_every_row():
    batches = np.asarray(R.epoch_batches(37, 8, jax.random.key(0)))
    assert batches.shape == (5, 8) and set(batches.ravel().tolist()) == set(range(37))


def test_save_and_load_round_trip(trained, tmp_path):
    model, _ = trained
    R.save(model, tmp_path / "ckpt")
    loaded = R.load(tmp_path / "ckpt")
    assert loaded.config == CONFIG
    np.testing.assert_array_equal(R.encode(loaded, _data()).codes, R.encode(model, _data()).codes)


def test_chunked_encoding_equals_one_pass(trained, monkeypatch):
    model, _ = trained
    x = _data(n=37, seed=5)
    monkeypatch.setattr(R, "_ENCODE_CHUNK", 16)  # 3 chunks, the last one padded
    encoded = R.encode(model, x)
    recon, q = model(jnp.asarray(x))
    np.testing.assert_array_equal(encoded.codes, np.asarray(q.codes))
    np.testing.assert_allclose(encoded.residuals, np.asarray(q.residuals), atol=1e-6)
    np.testing.assert_allclose(encoded.recon_mse, float(jnp.mean((recon - x) ** 2)), rtol=1e-5)


def _mlp_reference(mlp: R.MLP, x: np.ndarray) -> np.ndarray:
    """x W + b per layer, ReLU between, in float64."""
    for i, layer in enumerate(mlp.layers):
        x = x @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)
        if i + 1 < len(mlp.layers):
            x = np.maximum(x, 0.0)
    return x


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_mlp_and_its_gradients_in_each_compute_dtype(dtype, tolerance):
    """The encoder (float32 weights, matmuls in `dtype`) against float64 numpy, and its weight gradients against
    the float32 encoder's: bfloat16 to bf16 precision relative to each array's scale."""
    x = _data()
    model = R.RQVAE(dataclasses.replace(CONFIG, dtype=dtype), rngs=nnx.Rngs(0))
    reference = R.RQVAE(CONFIG, rngs=nnx.Rngs(0))  # float32, the same weights
    out = np.asarray(model.encoder(jnp.asarray(x)))
    assert out.dtype == np.float32
    want = _mlp_reference(model.encoder, x.astype(np.float64))
    assert np.abs(out - want).max() <= tolerance * np.abs(want).max()

    cotangent = jax.random.normal(jax.random.key(1), out.shape)

    def grads(encoder):
        return nnx.grad(lambda e: jnp.sum(e(jnp.asarray(x)) * cotangent))(encoder)

    for got, exp in zip(jax.tree.leaves(grads(model.encoder)), jax.tree.leaves(grads(reference.encoder))):
        got, exp = np.asarray(got), np.asarray(exp)
        assert got.shape == exp.shape and got.dtype == np.float32
        assert np.abs(got - exp).max() <= tolerance * np.abs(exp).max()
