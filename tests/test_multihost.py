"""The multi-host path on one machine: two processes joined by jax.distributed (gloo, loopback),
each with 2 fake CPU devices, one 4-device mesh across them.

Phase "full": collectives across processes, then 6 SFT steps (sidjax.train.sft.fit, orbax
checkpoints every 3 steps). Phases "first" + "resume": 3 steps in one pair of processes, then a
NEW pair restores the step-3 checkpoint (arrays sharded across both processes, data-iterator
state) and runs steps 4-6. The losses must equal the uninterrupted run's exactly.

This file is also the worker: `python tests/test_multihost.py PHASE WORKDIR PORT PROCESS_ID`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

NUM_PROCESSES = 2
PHASE_TIMEOUT_S = 300
PHASE_STEPS = {"full": 6, "first": 3, "resume": 6}


def _run_phases(phases: list[str], workdir: Path) -> None:
    """Start a pair of processes per phase, each pair with its own coordinator, and wait for all.

    Output goes to files: a full pipe would block a process, and its peer with it at the next barrier.
    """
    import portpicker

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               TF_CPP_MIN_LOG_LEVEL="3")
    procs = {}
    for phase in phases:
        port = portpicker.pick_unused_port()
        for pid in range(NUM_PROCESSES):
            with open(workdir / f"log_{phase}_{pid}.txt", "w") as log:
                procs[phase, pid] = subprocess.Popen(
                    [sys.executable, __file__, phase, str(workdir), str(port), str(pid)], env=env, stdout=log,
                    stderr=subprocess.STDOUT)
    try:
        for proc in procs.values():
            proc.wait(timeout=PHASE_TIMEOUT_S)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for (phase, pid), proc in procs.items():
        log = (workdir / f"log_{phase}_{pid}.txt").read_text(errors="replace")
        assert proc.returncode == 0, f"phase {phase}, process {pid} exited {proc.returncode}:\n{log[-4000:]}"


def _losses(workdir: Path, phase: str) -> dict[int, float]:
    lines = (workdir / f"metrics_{phase}" / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row["train/loss"] for row in map(json.loads, lines)}


def test_collectives_and_resumed_sft_across_processes(tmp_path):
    _run_phases(["full", "first"], tmp_path)  # independent runs in separate directories, side by side
    _run_phases(["resume"], tmp_path)  # a new pair of processes restores "first"'s step-3 checkpoint
    collectives = [json.loads((tmp_path / f"collectives_{pid}.json").read_text()) for pid in range(NUM_PROCESSES)]
    for pid, result in enumerate(collectives):
        assert result["process_count"] == NUM_PROCESSES and result["process_index"] == pid
        assert result["global_devices"] == 4 and result["local_devices"] == 2
        # Each of the 4 devices holds one row [i, i+1, i+2] (i = device number): sums over all of them.
        np.testing.assert_array_equal(result["psum"], [6, 10, 14])
        np.testing.assert_array_equal(result["global_sum"], 30)
        np.testing.assert_array_equal(result["allgather"], [[0, 1], [2, 3]])
    full, first, resumed = _losses(tmp_path, "full"), _losses(tmp_path, "first"), _losses(tmp_path, "resume")
    assert sorted(full) == [1, 2, 3, 4, 5, 6] and sorted(first) == [1, 2, 3] and sorted(resumed) == [4, 5, 6]
    assert full[6] < full[1]
    for step in range(1, 7):
        assert (first if step <= 3 else resumed)[step] == full[step], (step, full, first, resumed)
    assert (tmp_path / "run_resume" / "checkpoints" / "6").is_dir()  # the resumed pair checkpointed on


# ---------------------------------------------------------------- worker (runs in each process)


def _collectives(workdir: Path) -> None:
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    number = {d: i for i, d in enumerate(jax.devices())}
    local = np.stack([np.arange(3) + number[d] for d in jax.local_devices()]).astype(np.int32)
    rows = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), local)
    psum = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, "data"), mesh=mesh, in_specs=PartitionSpec("data"),
                                 out_specs=PartitionSpec()))(rows)
    global_sum = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(rows)
    gathered = multihost_utils.process_allgather(np.asarray([number[d] for d in jax.local_devices()]))
    result = {"process_index": jax.process_index(), "process_count": jax.process_count(),
              "local_devices": jax.local_device_count(), "global_devices": jax.device_count(),
              "psum": np.asarray(psum.addressable_data(0)).reshape(-1).tolist(),
              "global_sum": int(global_sum.addressable_data(0)),
              "allgather": np.asarray(gathered).tolist()}
    (workdir / f"collectives_{jax.process_index()}.json").write_text(json.dumps(result))


def _sft(workdir: Path, phase: str) -> None:
    from flax import nnx

    from sidjax.configs.sft import section
    from sidjax.data import loader
    from sidjax.model.config import ModelConfig
    from sidjax.model.transformer import CausalLM
    from sidjax.parallel.mesh import create_sharded, make_mesh
    from sidjax.train.sft import fit
    from sidjax.train.state import make_train_state
    from sidjax.utils.metrics import MetricsWriter

    mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 2})  # fsdp spans the two processes
    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                         intermediate_size=64)
    model = create_sharded(lambda: CausalLM(config, rngs=nnx.Rngs(0)), mesh)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 64, size=(32, 16), dtype=np.int32)
    records = {"tokens": tokens, "attention_mask": np.ones_like(tokens, bool),
               "loss_mask": np.arange(16)[None, :].repeat(32, 0) >= 4}
    c = section()
    c.decay, c.warmup_steps, c.learning_rate = "constant", 0, 1e-2  # lr independent of the run's length
    c.log_every, c.checkpoint_every, c.eval_every_epoch = 1, 3, False
    train = loader.batches(records, batch_size=8, seed=0, num_epochs=None)
    total = PHASE_STEPS[phase]
    state = make_train_state(model, c, total)
    run = "run_full" if phase == "full" else "run_resume"
    with MetricsWriter(workdir / f"metrics_{phase}") as writer:
        fit(state, train, None, c=c, stage_dir=workdir / run, steps_per_epoch=1000, total_steps=total,
            writer=writer, mesh=mesh)


def _worker(phase: str, workdir: str, port: str, process_id: str) -> None:
    from sidjax.parallel import distributed

    topology = distributed.initialize("explicit", coordinator_address=f"127.0.0.1:{port}",
                                      num_processes=NUM_PROCESSES, process_id=int(process_id), timeout_s=120)
    assert topology.num_processes == NUM_PROCESSES and topology.global_devices == 4, topology
    if phase == "full":
        _collectives(Path(workdir))
    _sft(Path(workdir), phase)


if __name__ == "__main__":
    _worker(*sys.argv[1:])
