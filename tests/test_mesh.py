"""Meshes from config.mesh, and the sharded forward on 8 fake CPU devices equal to the single-device one."""
import os
import subprocess
import sys
import textwrap

import pytest

from sidjax.parallel.mesh import mesh_shape
from sidjax.parallel.rules import logical_spec

SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from sidjax.model.config import preset
    from sidjax.model.transformer import CausalLM, positions_from_mask
    from sidjax.parallel.mesh import create_sharded, make_mesh, shard_model

    assert jax.device_count() == 8
    config = preset("tiny", 256).replace(tie_word_embeddings=False, num_heads=4, num_kv_heads=2)
    factory = lambda: CausalLM(config, rngs=nnx.Rngs(0))
    single = factory()
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 256, (8, 6)), jnp.int32)
    mask = jnp.asarray(np.arange(6)[None] >= rng.integers(0, 4, (8, 1)))
    positions = positions_from_mask(mask)

    @nnx.jit
    def run(model, tokens, positions, mask, cache):
        return model(tokens, positions, attention_mask=mask, cache=cache)

    def spec(param):
        value = param[...]
        return tuple(value.sharding.spec) + (None,) * (value.ndim - len(value.sharding.spec))

    expected, _ = run(single, tokens, positions, mask, single.init_cache(8, 8))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": -1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    for model in (create_sharded(factory, mesh), shard_model(factory(), mesh)):
        assert spec(model.embed) == ("tensor", "fsdp")
        assert spec(model.layers[0].mlp.down_proj) == ("tensor", "fsdp")
        assert spec(model.layers[0].attn.k_proj) == ("fsdp", "tensor", None)
        np.testing.assert_allclose(np.asarray(model.embed[...]), np.asarray(single.embed[...]), rtol=1e-6)
        with jax.set_mesh(mesh):
            batch = NamedSharding(mesh, P(("data", "fsdp")))
            args = [jax.device_put(x, batch) for x in (tokens, positions, mask)]
            logits, cache = run(model, *args, model.init_cache(8, 8))
        np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5, rtol=1e-5)
        assert len(logits.sharding.device_set) == 8
    # HF weights straight into their shards.
    import tempfile
    from sidjax.model import hf
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(single, d)
        loaded = hf.load_model(d, mesh)
    assert spec(loaded.layers[1].attn.q_proj) == ("fsdp", "tensor", None)
    np.testing.assert_array_equal(np.asarray(loaded.lm_head[...]), np.asarray(single.lm_head[...]))
    print("SHARDED_OK")
""")


def test_sharded_forward_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "SHARDED_OK" in result.stdout, result.stderr[-4000:]


def test_mesh_shape_infers_one_axis():
    assert mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
    assert mesh_shape({"data": 1, "fsdp": 1, "tensor": 1}, 1) == (1, 1, 1)
    with pytest.raises(ValueError, match="at most one axis"):
        mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="not divisible"):
        mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)


def test_rules_cover_logical_names():
    assert tuple(logical_spec(("activation_batch", "activation_length", "activation_embed"))) == (
        ("data", "fsdp"), None, None)
    assert tuple(logical_spec(("vocab", "embed"))) == ("tensor", "fsdp")
    with pytest.raises(KeyError, match="no rule"):
        logical_spec(("embedding",))
