"""The NNX causal LM: cache, prefix sharing and left padding agree with the plain full forward pass."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.model.config import ModelConfig, RopeScaling, preset
from sidjax.model.dropout import dropout
from sidjax.model.transformer import CausalLM, positions_from_mask

VOCAB = 97


@nnx.jit
def _run(model, tokens, positions, attention_mask=None, cache=None, prefix=None, dropout_key=None):
    return model(tokens, positions, attention_mask=attention_mask, cache=cache, prefix=prefix,
                 dropout_key=dropout_key)


def _model(**changes) -> CausalLM:
    config = preset("tiny", VOCAB).replace(**changes)
    return CausalLM(config, rngs=nnx.Rngs(0))


def _tokens(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, shape), jnp.int32)


def _full_logits(model, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return _run(model, tokens, positions)[0]


@pytest.mark.parametrize("changes", [
    {},
    {"attention_impl": "xla", "qk_norm": False, "attention_bias": True, "tie_word_embeddings": False},
    {"rope_scaling": RopeScaling(type="llama3", factor=8.0, original_max_position_embeddings=64)},
])
def test_cached_decoding_equals_full_forward(changes):
    model = _model(**changes)
    tokens = _tokens((2, 9))
    full = _full_logits(model, tokens)
    cache = model.init_cache(2, 12)
    prompt = 5
    logits, cache = _run(model, tokens[:, :prompt], jnp.broadcast_to(jnp.arange(prompt), (2, prompt)), cache=cache)
    steps = [logits]
    for t in range(prompt, tokens.shape[1]):
        logits, cache = _run(model, tokens[:, t:t + 1], jnp.full((2, 1), t), cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-5, rtol=1e-5)
    assert int(cache.index) == tokens.shape[1]


def test_left_padding_does_not_change_real_tokens():
    model = _model()
    lengths = [7, 4, 1]
    width = max(lengths)
    rows = [_tokens((1, n), seed=i)[0] for i, n in enumerate(lengths)]
    padded = jnp.stack([jnp.pad(r, (width - len(r), 0)) for r in rows])
    mask = jnp.arange(width)[None, :] >= (width - jnp.asarray(lengths))[:, None]
    logits, _ = _run(model, padded, positions_from_mask(mask), attention_mask=mask)
    assert np.isfinite(np.asarray(logits)).all()
    for i, row in enumerate(rows):
        alone = _full_logits(model, row[None])
        np.testing.assert_allclose(logits[i, width - len(row):], alone[0], atol=2e-5, rtol=1e-5)

    # Continue the padded batch with the cache: each row's next-token logits match its own full pass.
    cache = model.init_cache(3, width + 2)
    _, cache = _run(model, padded, positions_from_mask(mask), attention_mask=mask, cache=cache)
    nxt = _tokens((3, 1), seed=9)
    step, _ = _run(model, nxt, jnp.asarray(lengths)[:, None], cache=cache)
    for i, row in enumerate(rows):
        alone = _full_logits(model, jnp.concatenate([row, nxt[i]])[None])
        np.testing.assert_allclose(step[i, 0], alone[0, -1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_prefix_sharing_equals_repeated_prompts(impl):
    model = _model(attention_impl=impl)
    beams, prompt_len, steps = 3, 6, 3
    lengths = jnp.asarray([6, 3])
    prompts = _tokens((2, prompt_len))
    pmask = jnp.arange(prompt_len)[None, :] >= (prompt_len - lengths)[:, None]
    generated = _tokens((2 * beams, steps), seed=5)

    prefix = model.init_cache(2, prompt_len)
    _, prefix = _run(model, prompts, positions_from_mask(pmask), attention_mask=pmask, cache=prefix)
    cache = model.init_cache(2 * beams, steps)
    shared = []
    for s in range(steps):
        pos = jnp.repeat(lengths, beams)[:, None] + s
        logits, cache = _run(model, generated[:, s:s + 1], pos, cache=cache, prefix=prefix)
        shared.append(logits)

    rep_prompts = jnp.repeat(prompts, beams, axis=0)
    rep_mask = jnp.repeat(pmask, beams, axis=0)
    tokens = jnp.concatenate([rep_prompts, generated], axis=1)
    mask = jnp.concatenate([rep_mask, jnp.ones_like(generated, bool)], axis=1)
    reference, _ = _run(model, tokens, positions_from_mask(mask), attention_mask=mask)
    np.testing.assert_allclose(np.concatenate(shared, axis=1), reference[:, prompt_len:], atol=2e-5, rtol=1e-5)


def test_jitted_step_with_donated_cache_bf16():
    model = _model(dtype="bfloat16", param_dtype="bfloat16")

    @nnx.jit(donate_argnums=(3,))
    def step(model, tokens, positions, cache):
        return model(tokens, positions, cache=cache)

    tokens = _tokens((2, 4))
    cache = model.init_cache(2, 8)
    logits, cache = step(model, tokens, jnp.broadcast_to(jnp.arange(4), (2, 4)), cache)
    logits2, cache = step(model, tokens[:, :1], jnp.full((2, 1), 4), cache)
    assert logits.dtype == jnp.float32 and cache.k.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(logits2)).all() and int(cache.index) == 5


def test_params_carry_logical_axes_and_count():
    model = _model(tie_word_embeddings=False, attention_bias=True)
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for v in leaves:
        axes = v.get_metadata()["out_sharding"]
        assert len(axes) == v.ndim
    assert sum(v.size for v in leaves) == model.config.num_params()


def test_config_validation_and_json_roundtrip(tmp_path):
    config = preset("demo", 1000).replace(rope_scaling=RopeScaling(type="yarn", factor=4.0,
                                                                   original_max_position_embeddings=32))
    config.to_json(tmp_path / "c.json")
    assert ModelConfig.from_json(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="num_kv_heads"):
        config.replace(num_kv_heads=3)
    with pytest.raises(ValueError, match="attention_impl"):
        config.replace(attention_impl="flash")
    with pytest.raises(ValueError, match="dropout"):
        config.replace(dropout=1.0)


def test_full_remat_gives_the_same_gradients():
    """Also under dropout: the rematerialised backward pass redraws exactly the forward pass's masks."""
    tokens = _tokens((2, 6))
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))

    def grads(model):
        def loss(model):
            return jnp.mean(model(tokens, positions, dropout_key=jax.random.key(5))[0] ** 2)
        return nnx.jit(nnx.grad(loss))(model)

    plain, rematted = grads(_model(dropout=0.3)), grads(_model(remat="full", dropout=0.3))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(rematted)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_dropout_zeroes_about_rate_of_the_elements_and_keeps_the_mean():
    x = jnp.ones((200, 500))
    y = np.asarray(dropout(x, 0.25, jax.random.key(0)))
    assert abs(np.mean(y == 0) - 0.25) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    assert dropout(x, 0.25, None) is x and dropout(x, 0.0, jax.random.key(0)) is x


def test_dropout_rounds_its_rate_to_steps_of_a_256th_and_keeps_the_mean_exactly():
    """0.3 runs as 77 / 256 (keep_levels 179), kept elements scaled by 256 / 179; any size, any dtype."""
    x = jnp.ones((301, 333), jnp.bfloat16)  # 100,233 elements: not a multiple of the 4 bytes of a draw
    y = np.asarray(dropout(x, 0.3, jax.random.key(1)), np.float32)
    assert dropout(x, 0.3, jax.random.key(1)).dtype == jnp.bfloat16
    assert abs(np.mean(y == 0) - 77 / 256) < 0.005
    np.testing.assert_allclose(y[y != 0], float(jnp.bfloat16(256 / 179)))
    assert abs(np.mean(y) - 1.0) < 0.01
    other = np.asarray(dropout(x, 0.3, jax.random.key(2)), np.float32)
    assert abs(np.mean((y == 0) & (other == 0)) - (77 / 256) ** 2) < 0.005  # keys draw independent masks


@pytest.mark.parametrize("rate", [0.001, 0.999])
def test_a_dropout_rate_that_rounds_to_none_or_all_is_refused(rate):
    with pytest.raises(ValueError, match=r"ModelConfig\.dropout: dropout rate .* steps of 1/256"):
        _model(dropout=rate)


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_dropout_acts_only_on_passes_given_a_key(impl):
    tokens, positions = _tokens((2, 9)), jnp.broadcast_to(jnp.arange(9), (2, 9))
    plain, dropping = _model(attention_impl=impl), _model(attention_impl=impl, dropout=0.3)
    key = jax.random.key(0)
    want = _run(plain, tokens, positions)[0]
    np.testing.assert_array_equal(_run(dropping, tokens, positions)[0], want)  # eval / decoding: no key
    np.testing.assert_array_equal(_run(plain, tokens, positions, dropout_key=key)[0], want)  # rate 0: a no-op
    train = _run(dropping, tokens, positions, dropout_key=key)[0]
    assert not np.allclose(train, want, atol=1e-3)
    np.testing.assert_array_equal(_run(dropping, tokens, positions, dropout_key=key)[0], train)
    assert not np.allclose(_run(dropping, tokens, positions, dropout_key=jax.random.key(1))[0], train, atol=1e-3)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_rope_equals_the_sliced_rotate_half_with_the_same_gradient(dtype):
    from sidjax.model.transformer import apply_rope

    def sliced(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos[:, :, None].astype(x.dtype) + rotated * sin[:, :, None].astype(x.dtype)

    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 5, 3, 8)).astype(dtype)
    cos, sin = jax.random.normal(keys[1], (2, 5, 8)), jax.random.normal(keys[2], (2, 5, 8))
    np.testing.assert_array_equal(np.asarray(apply_rope(x, cos, sin), np.float32),
                                  np.asarray(sliced(x, cos, sin), np.float32))
    weights = jax.random.normal(keys[0], x.shape).astype(dtype)

    def grad(rope):
        return jax.grad(lambda v: jnp.sum((rope(v, cos, sin) * weights).astype(jnp.float32)))(x)

    np.testing.assert_array_equal(np.asarray(grad(apply_rope), np.float32), np.asarray(grad(sliced), np.float32))
