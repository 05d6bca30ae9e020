"""Start JAX's multi-controller runtime (`jax.distributed.initialize`) from flags or the environment.

Every process of a multi-host job runs the same program; before anything touches a device
they must find each other through a coordinator (process 0). How they learn the
coordinator's address, their number and their own id depends on the launcher:

- `explicit`: `--coordinator_address host:port --num_processes N --process_id I` (or the
  environment variables SIDJAX_COORDINATOR_ADDRESS / SIDJAX_NUM_PROCESSES / SIDJAX_PROCESS_ID);
- `slurm`, `gcetpu` (TPU VM pods), `gketpu`, `ompi`, `mpi4py`: JAX's own cluster
  detection, which reads the launcher's environment (SLURM_*, the TPU metadata server, ...);
- `auto`: explicit settings when given, else the first cluster JAX detects; an error when
  there is none (a pod job must never quietly run as N unrelated single-process jobs);
- `single`: one process, nothing to start. It refuses to run inside what looks like a
  multi-process job (SLURM_NTASKS > 1, several TPU workers, an MPI world > 1).

On CPU, processes exchange collectives through gloo.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import jax
from absl import flags, logging

MODES = ("single", "auto", "explicit", "slurm", "gcetpu", "gketpu", "ompi", "mpi4py")
ENV_COORDINATOR = "SIDJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "SIDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SIDJAX_PROCESS_ID"

_MODE = flags.DEFINE_enum("distributed", "single", MODES, "How this process joins a multi-process job "
                          "(see sidjax/parallel/distributed.py).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", f"host:port of process 0 (or ${ENV_COORDINATOR}).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, f"Processes in the job (or ${ENV_NUM_PROCESSES}).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, f"This process's id, 0..N-1 (or ${ENV_PROCESS_ID}).")
_TIMEOUT = flags.DEFINE_integer("distributed_timeout_s", 300, "Seconds to wait for all processes to connect.")


class DistributedError(RuntimeError):
    """The job's processes cannot be started as asked; the message says which setting to fix."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """Where this process sits once the runtime is up."""

    mode: str
    process_id: int
    num_processes: int
    local_devices: int
    global_devices: int


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def _multi_process_hints() -> list[str]:
    """Signs in the environment that this process is one of several launched together."""
    hints = []
    if (_env_int("SLURM_NTASKS") or 1) > 1:
        hints.append(f"SLURM_NTASKS={os.environ['SLURM_NTASKS']}")
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        hints.append("TPU_WORKER_HOSTNAMES lists several workers")
    if (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        hints.append(f"OMPI_COMM_WORLD_SIZE={os.environ['OMPI_COMM_WORLD_SIZE']}")
    if os.environ.get(ENV_COORDINATOR):
        hints.append(f"{ENV_COORDINATOR} is set")
    return hints


def _detected_cluster() -> Optional[str]:
    """The name of the first cluster environment JAX recognises here (None: none)."""
    from jax._src import clusters

    for env in clusters.ClusterEnv._cluster_types:
        if not env.opt_in_only_method and env.is_env_present():
            return env.name
    return None


def _use_gloo_on_cpu() -> None:
    # Cross-process collectives on CPU need an implementation; gloo ships with jaxlib.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(
    mode: str,
    *,
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    timeout_s: int = 300,
) -> Topology:
    """Join (or, for mode `single`, confirm there is no) multi-process job; call before using any device."""
    if mode not in MODES:
        raise DistributedError(f"--distributed must be one of {MODES}, got '{mode}'")
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR, "")
    num_processes = num_processes or _env_int(ENV_NUM_PROCESSES) or 0
    if process_id < 0:
        from_env = _env_int(ENV_PROCESS_ID)
        process_id = -1 if from_env is None else from_env
    if mode == "single":
        hints = _multi_process_hints()
        if hints:
            raise DistributedError(f"--distributed=single, but this looks like a multi-process job ({'; '.join(hints)}):"
                                   " pass --distributed=auto (or the launcher's mode)")
        return _topology(mode)
    if mode == "auto":
        mode = "explicit" if coordinator_address else _detected_cluster()
        if mode is None:
            raise DistributedError("--distributed=auto found no coordinator (--coordinator_address / "
                                   f"${ENV_COORDINATOR}) and no cluster environment JAX knows (SLURM, TPU pod, "
                                   "Open MPI, GKE TPU); for one process pass --distributed=single")
    _use_gloo_on_cpu()
    if mode == "explicit":
        missing = [name for name, value in (("--coordinator_address", coordinator_address),
                                            ("--num_processes", num_processes)) if not value]
        if process_id < 0:
            missing.append("--process_id")
        if missing:
            raise DistributedError(f"--distributed=explicit needs {', '.join(missing)} (or the "
                                   f"{ENV_COORDINATOR} / {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID} variables)")
        if not 0 <= process_id < num_processes:
            raise DistributedError(f"--process_id {process_id} is not in 0..{num_processes - 1}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=timeout_s)
    else:
        jax.distributed.initialize(cluster_detection_method=mode, initialization_timeout=timeout_s)
    topology = _topology(mode)
    logging.info("distributed: process %d of %d (%s), %d local / %d global devices", topology.process_id,
                 topology.num_processes, mode, topology.local_devices, topology.global_devices)
    return topology


def _topology(mode: str) -> Topology:
    return Topology(mode=mode, process_id=jax.process_index(), num_processes=jax.process_count(),
                    local_devices=jax.local_device_count(), global_devices=jax.device_count())


def initialize_from_flags() -> Topology:
    """`initialize` with this module's absl flags (`--distributed`, `--coordinator_address`, ...)."""
    return initialize(_MODE.value, coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                      process_id=_PROCESS_ID.value, timeout_s=_TIMEOUT.value)
