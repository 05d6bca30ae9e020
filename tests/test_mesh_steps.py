"""Train steps on a (data 2, fsdp 2, tensor 2) mesh of 8 fake CPU devices equal the single-device steps.

Each script runs in its own process, since the fake device count is fixed when jax starts; it
prints one JSON line comparing the two runs.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SFT_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, sys
    import jax, numpy as np
    from flax import nnx
    sys.path.insert(0, "tests")
    import test_sft
    from sidjax.model.config import preset
    from sidjax.model.transformer import CausalLM
    from sidjax.parallel.mesh import create_sharded, make_mesh
    from sidjax.parallel.placement import place_state, put_batch
    from sidjax.train import sft
    from sidjax.train.state import make_train_state

    # adam_eps=1: Adam would turn 1e-9 gradient noise into +-lr updates; this keeps updates
    # proportional to the gradients, so parameters compare the steps' numerics.
    c = test_sft._section(warmup_steps=0, grad_accum_steps=2, adam_eps=1.0)
    batch = test_sft._batch(test_sft._records(), np.arange(8))
    build = lambda: CausalLM(preset("tiny", test_sft.V), rngs=nnx.Rngs(0))

    def run(mesh):
        model = build() if mesh is None else create_sharded(build, mesh)
        state = place_state(make_train_state(model, c, 5), mesh)
        step = sft.make_train_step(state, grad_accum_steps=2)
        arrays, losses = state.arrays, []
        for _ in range(2):
            with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
                arrays, metrics = step(arrays, put_batch({k: batch[k] for k in sft.BATCH_KEYS}, mesh))
            losses.append(float(metrics["loss"]))
        params = [np.asarray(x) for x in jax.tree.leaves(arrays[0])]
        sharded = any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(arrays[0]))
        return losses, params, sharded

    one_losses, one_params, _ = run(None)
    mesh_losses, mesh_params, sharded = run(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    print(json.dumps({
        "devices": jax.device_count(), "sharded": sharded,
        "loss_diff": max(abs(a - b) for a, b in zip(one_losses, mesh_losses)),
        "param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one_params, mesh_params)),
    }))
    """
)

GRPO_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    sys.path.insert(0, "tests")
    import test_grpo as toy
    from sidjax.configs import base_config
    from sidjax.decode.beam import TrieTables
    from sidjax.model.config import ModelConfig
    from sidjax.model.transformer import CausalLM
    from sidjax.parallel.mesh import create_sharded, make_mesh
    from sidjax.sid.codes import SidTrie
    from sidjax.train import grpo
    from sidjax.parallel.placement import place_state
    from sidjax.train.state import make_train_state
    from sidjax.utils.settings import settings_from

    section = base_config().grpo
    section.unlock()
    section.group_size = 4
    section.reward_weights = {"exact": 1.0, "rank": 1.0, "prefix": 1.0}
    section.learning_rate = 1e-2
    section.adam_eps = 1.0  # updates proportional to gradients (see SFT_SCRIPT)
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=None)
    tables = TrieTables.from_trie(SidTrie.build(toy.SIDS, (4, 4, 4)), toy.OFFSETS)
    config = ModelConfig(vocab_size=24, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                         intermediate_size=64)
    build = lambda: CausalLM(config, rngs=nnx.Rngs(0))

    def run(mesh):
        model = build() if mesh is None else create_sharded(build, mesh)
        state = place_state(make_train_state(model, section, total_steps=10), mesh)
        ref = jax.tree.map(jnp.copy, state.model_arrays())
        step = grpo.make_grpo_step(state.graphdef, state.wrt, grpo.beam_rollout(4), settings)
        arrays, losses = state.arrays, []
        start = [np.asarray(x) for x in jax.tree.leaves(arrays[0])]
        for _ in range(2):
            with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
                arrays, metrics = step(arrays, ref, toy.toy_inputs(), tables)
            losses.append(float(metrics["loss"]))
        leaves = jax.tree.leaves(arrays[0])
        params = [np.asarray(x) for x in leaves]
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(start, params))
        return losses, params, moved, any(not x.sharding.is_fully_replicated for x in leaves)

    one_losses, one_params, moved, _ = run(None)
    mesh_losses, mesh_params, _, sharded = run(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    print(json.dumps({
        "devices": jax.device_count(), "sharded": sharded, "moved": moved,
        "loss_diff": max(abs(a - b) for a, b in zip(one_losses, mesh_losses)),
        "param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one_params, mesh_params)),
    }))
    """
)


def _run_on_8_devices(script: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8 and result["sharded"]
    return result


def test_sft_step_on_a_2x2x2_mesh_equals_one_device():
    result = _run_on_8_devices(SFT_SCRIPT)
    assert result["loss_diff"] < 1e-5
    assert result["param_diff"] < 1e-5


def test_grpo_step_on_a_2x2x2_mesh_equals_one_device():
    result = _run_on_8_devices(GRPO_SCRIPT)
    assert result["moved"] > 1e-4, "the steps must change the parameters"
    assert result["loss_diff"] < 1e-5
    assert result["param_diff"] < 1e-5
