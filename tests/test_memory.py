"""The memory plan: its estimate against XLA's accounting of the real SFT step (`measure`, here
since only this test needs it), its refusals, and the shipped pod configs' plans.

`python tests/test_memory.py` prints estimate vs. XLA for each checked mesh (8 fake CPU devices);
the test runs it in a subprocess (the device count must be set before jax starts).
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from sidjax.configs import validate
from sidjax.model.config import ModelConfig
from sidjax.model.hf import config_from_hf
from sidjax.parallel import memory
from sidjax.parallel.mesh import mesh_shape
from sidjax.stages.memory_check import check_stage, stage_workload

GIB = 1 << 30
TINY = ModelConfig(vocab_size=1024, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
                   intermediate_size=384, qk_norm=True)
UNTIED = ModelConfig(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2, head_dim=32,
                     intermediate_size=512, tie_word_embeddings=False)
# (model, global batch, sequence length, mesh axis sizes)
CASES = [
    ("tiny", 8, 64, {"data": 1, "fsdp": 1, "tensor": 1}),
    ("tiny", 8, 64, {"data": 1, "fsdp": 8, "tensor": 1}),
    ("untied", 8, 64, {"data": 2, "fsdp": 2, "tensor": 2}),
]
MAX_ERROR = 0.12
# Measured for the report only (`python tests/test_memory.py remat`): the estimate is looser with remat.
REMAT_CASES = [
    ("tiny", 8, 128, {"data": 1, "fsdp": 1, "tensor": 1}, "full"),
    ("untied", 8, 64, {"data": 2, "fsdp": 2, "tensor": 2}, "full"),
    ("tiny", 8, 128, {"data": 1, "fsdp": 1, "tensor": 1}, "dots"),
    ("untied", 8, 64, {"data": 2, "fsdp": 2, "tensor": 2}, "dots"),
]


def measure(model_config: ModelConfig, mesh, workload: memory.Workload) -> int:
    """Peak bytes per device of the real jitted SFT step, by XLA's own accounting (compiled, never run).

    Arguments + outputs - donated aliases + temporaries of `compiled.memory_analysis()`: what
    `memory.estimate` predicts, for checking it on any backend (CPU meshes of fake devices included).
    """
    import jax
    import numpy as np
    from flax import nnx

    from sidjax.configs.sft import section
    from sidjax.model.transformer import CausalLM
    from sidjax.parallel.mesh import create_sharded
    from sidjax.parallel.placement import place_state, put_batch
    from sidjax.train import sft
    from sidjax.train.state import make_train_state

    model_config = model_config.replace(remat=workload.remat)
    model = create_sharded(lambda: CausalLM(model_config, rngs=nnx.Rngs(0)), mesh)
    c = section()
    c.grad_accum_steps = workload.grad_accum_steps
    state = place_state(make_train_state(model, c, 10), mesh)
    step = sft.make_train_step(state, grad_accum_steps=workload.grad_accum_steps, logits_chunk=workload.logits_chunk)
    shape = (workload.batch_size, workload.seq_len)
    host = {"tokens": np.zeros(shape, np.int32), "attention_mask": np.ones(shape, bool),
            "loss_mask": np.ones(shape, bool), "example_mask": np.ones(shape[:1], bool)}
    batch = put_batch(host, mesh, rows="global")
    with jax.set_mesh(mesh):
        stats = step.func.lower(*step.args, state.arrays, batch).compile().memory_analysis()  # step: partial(jit, seed)
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
            + stats.temp_size_in_bytes)


def _measure_cases(cases: list[tuple]) -> list[dict]:
    import jax

    from sidjax.parallel.mesh import make_mesh

    out = []
    for name, batch, length, sizes, *remat in cases:
        model_config = {"tiny": TINY, "untied": UNTIED}[name]
        workload = memory.Workload(batch_size=batch, seq_len=length, remat=(remat or ["none"])[0])
        mesh = make_mesh(sizes, jax.devices()[: sizes["data"] * sizes["fsdp"] * sizes["tensor"]])
        real = measure(model_config, mesh, workload)
        planned = memory.estimate(model_config, sizes, workload).total
        out.append({"model": name, "batch": batch, "length": length, "mesh": sizes, "remat": workload.remat,
                    "xla_bytes": real,
                    "estimate_bytes": planned, "error": (planned - real) / real})
    return out


def test_estimate_matches_xla_accounting_of_the_sft_step():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == len(CASES)
    for r in results:
        assert abs(r["error"]) < MAX_ERROR, r


def test_param_bytes_follow_the_sharding_rules():
    workload = memory.Workload(batch_size=8, seq_len=64)
    single = memory.estimate(TINY, {"data": 1, "fsdp": 1, "tensor": 1}, workload)
    assert single.params == TINY.num_params() * 4 and single.optimizer == 2 * single.params
    assert single.gathered == 0
    fsdp = memory.estimate(TINY, {"data": 1, "fsdp": 2, "tensor": 1}, workload)
    # Every matrix has an "embed" dimension (split in 2); only the norms' scales stay whole.
    norms = (2 * TINY.num_layers + 1) * TINY.hidden_size + 2 * TINY.num_layers * TINY.head_dim
    assert fsdp.params == (TINY.num_params() - norms) * 4 // 2 + norms * 4
    assert fsdp.gathered == fsdp.params
    # Data parallelism splits the activations, not the parameters.
    data = memory.estimate(TINY, {"data": 2, "fsdp": 1, "tensor": 1}, workload)
    assert data.params == single.params and data.activations == single.activations // 2


def test_chunked_logits_and_accumulation_shrink_the_step():
    base = memory.Workload(batch_size=8, seq_len=128)
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    whole = memory.estimate(TINY, sizes, base)
    chunked = memory.estimate(TINY, sizes, memory.Workload(batch_size=8, seq_len=128, logits_chunk=32))
    accumulated = memory.estimate(TINY, sizes, memory.Workload(batch_size=8, seq_len=128, grad_accum_steps=2))
    assert chunked.logits * 4 == whole.logits
    assert accumulated.activations * 2 == whole.activations and accumulated.grads == 2 * whole.grads


def _config_module(name: str):
    return importlib.import_module(f"experiments.configs.{name}")


def test_refuses_a_run_that_cannot_fit_and_says_what_to_change():
    module = _config_module("industrial_qwen3_1p7b")
    model_config = config_from_hf(module.HF_CONFIG, dtype="bfloat16")
    config = module.get_config()
    config.sft.grad_accum_steps = 1
    config.sft.logits_chunk = 0
    sizes = {"data": 8, "fsdp": 1, "tensor": 1}
    plan = memory.estimate(model_config, sizes, stage_workload(config, "sft"))
    with pytest.raises(memory.MemoryPlanError) as error:
        memory.ensure_fits(plan, model_config, 80 * GIB, 0.1)
    message = str(error.value)
    assert "72.00 GiB budget" in message
    for change in ("fsdp=2 (data=4)", "logits_chunk=256", "grad_accum_steps=2", "batch_size=64"):
        assert change in message
    assert "(fits)" in message


def test_the_stage_check_names_the_config_keys():
    import jax

    from sidjax.parallel.mesh import make_mesh

    module = _config_module("industrial_qwen3_1p7b")
    config = module.get_config()
    config.mesh.device_memory_gib = 1.0
    model_config = config_from_hf(module.HF_CONFIG, dtype="bfloat16")
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    with pytest.raises(memory.MemoryPlanError, match=r"(?s)1\.00 GiB less a margin.*config\.mesh\.memory_margin"
                                                     r".*under config\.sft\."):
        check_stage(config, "sft", model_config, mesh)


def test_each_model_stage_plans_with_its_own_remat_or_the_meshs():
    from sidjax.configs import base_config

    config = base_config()
    config.mesh.remat = "dots"
    config.sft.remat = "none"
    assert stage_workload(config, "sft").remat == "none"
    assert stage_workload(config, "reason_sft").remat == "dots" and stage_workload(config, "grpo").remat == "dots"


def test_device_capacity():
    assert memory.device_capacity(2.5) == int(2.5 * GIB)
    assert memory.device_capacity() > 0  # CPU: this device's share of host RAM


@pytest.mark.parametrize("name, devices, device_gib", [
    ("industrial_qwen3_1p7b", 4, 95),  # v5p-8
    ("industrial_qwen3_1p7b", 8, 80),  # 8x H100 80GB
    ("tpu_qwen25_7b_v5p64", 32, 95),  # v5p-64
])
def test_shipped_pod_configs_fit_their_devices(name, devices, device_gib):
    module = _config_module(name)
    config = module.get_config()
    validate(config)
    # The vocabulary grows by the SID tokens (3 x 256 + specials, padded to a multiple of 128).
    model_config = config_from_hf(module.HF_CONFIG, vocab_size=module.HF_CONFIG["vocab_size"] + 1024,
                                  dtype=config.model.dtype, param_dtype=config.model.param_dtype)
    sizes = dict(zip(("data", "fsdp", "tensor"), mesh_shape(config.mesh, devices)))
    for stage in ("sft", "reason_sft", "grpo"):
        plan = memory.estimate(model_config, sizes, stage_workload(config, stage))
        memory.ensure_fits(plan, model_config, device_gib * GIB, config.mesh.memory_margin)


if __name__ == "__main__":
    print(json.dumps(_measure_cases(REMAT_CASES if sys.argv[1:] == ["remat"] else CASES)))
