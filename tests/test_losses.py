"""Chunked log-probs / cross-entropy against the naive full-logits computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.train.losses import (
    hidden_token_logprobs,
    masked_cross_entropy,
    masked_nll,
    next_token_mask,
    response_window,
    token_logprobs,
)

B, T, D, V = 3, 7, 5, 11


def _inputs():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(k1, (B, T, D))
    weight = jax.random.normal(k2, (D, V))
    targets = jax.random.randint(k3, (B, T), 0, V)
    return hidden, weight, targets


def _naive(hidden, weight, targets):
    logp = jax.nn.log_softmax(hidden @ weight, axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return picked, entropy


@pytest.mark.parametrize("chunk", [0, 1, 3, 7, 100])
def test_chunked_logprobs_and_entropy_equal_naive(chunk):
    hidden, weight, targets = _inputs()
    got = hidden_token_logprobs(hidden, targets, lambda h: h @ weight, chunk_size=chunk, with_entropy=True)
    want_lp, want_ent = _naive(hidden, weight, targets)
    np.testing.assert_allclose(got.logprobs, want_lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.entropy, want_ent, rtol=1e-5, atol=1e-5)
    assert hidden_token_logprobs(hidden, targets, lambda h: h @ weight, chunk_size=chunk).entropy is None


def test_chunked_gradients_equal_naive():
    hidden, weight, targets = _inputs()
    mask = jnp.arange(T)[None, :] < jnp.array([[7], [4], [1]])

    def chunked(h, w):
        return masked_cross_entropy(hidden_token_logprobs(h, targets, lambda x: x @ w, chunk_size=3).logprobs, mask)

    def naive(h, w):
        return masked_cross_entropy(_naive(h, w, targets)[0], mask)

    got = jax.jit(jax.grad(chunked, argnums=(0, 1)))(hidden, weight)
    want = jax.grad(naive, argnums=(0, 1))(hidden, weight)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_token_logprobs_match_the_models_full_logits():
    model = nnx.jit(lambda: CausalLM(preset("tiny", 50).replace(num_layers=1), rngs=nnx.Rngs(1)))()
    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 50)
    positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
    logits = nnx.jit(lambda m, t, p: m(t, p)[0])(model, tokens, positions)
    want = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1], -1), tokens[:, 1:, None], -1)[..., 0]
    got = nnx.jit(lambda m, t, p: token_logprobs(m, t, p, chunk_size=4))(model, tokens, positions)
    assert got.logprobs.shape == (2, 8)
    np.testing.assert_allclose(got.logprobs, want, rtol=1e-5, atol=1e-5)


def test_masked_nll_and_mean_against_plain_python():
    logprobs = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.25, -4.0]], np.float32)
    mask = np.array([[True, False, True], [False, True, False]])
    total, count = masked_nll(jnp.asarray(logprobs), jnp.asarray(mask))
    assert float(total) == pytest.approx(1.0 + 3.0 + 0.25) and float(count) == 3.0
    assert float(masked_cross_entropy(jnp.asarray(logprobs), jnp.asarray(mask))) == pytest.approx(4.25 / 3)
    assert float(masked_cross_entropy(jnp.asarray(logprobs), jnp.zeros_like(mask))) == 0.0
    token_mask = np.array([[False, True, True, False]])
    assert next_token_mask(jnp.asarray(token_mask)).tolist() == [[True, True, False]]


def test_response_window_scores_exactly_the_masked_tokens():
    hidden, weight, targets = _inputs()
    tokens = jnp.concatenate([targets[:, :1], targets], axis=1)[:, :T]  # tokens[t + 1] == targets[t] where t < T-1
    mask = np.zeros((B, T), bool)
    mask[0, 2:5] = True  # mid-sequence
    mask[1, 4:] = True  # up to the last token
    # row 2: nothing to learn
    full = hidden_token_logprobs(hidden[:, :-1], tokens[:, 1:], lambda h: h @ weight).logprobs
    want = masked_nll(full, jnp.asarray(mask[:, 1:]))
    window_hidden, window_targets, window_mask = response_window(hidden, tokens, jnp.asarray(mask), 3)
    assert window_hidden.shape == (B, 3, D) and window_mask.sum() == mask.sum()
    got = masked_nll(hidden_token_logprobs(window_hidden, window_targets, lambda h: h @ weight).logprobs, window_mask)
    np.testing.assert_allclose(got, want, rtol=1e-6)
