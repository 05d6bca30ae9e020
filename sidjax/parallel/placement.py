"""Putting batches and train state on the mesh: the one place host arrays become (sharded) device arrays."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sidjax.parallel.rules import logical_spec

Rows = Literal["local", "global", "replicated"]


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
    """Rows split over the mesh's batch axes (the `activation_batch` rule), other dimensions whole."""
    return NamedSharding(mesh, logical_spec(("activation_batch",) + (None,) * (ndim - 1)))


def replicated(mesh: Optional[jax.sharding.Mesh]) -> Optional[NamedSharding]:
    """A full copy on every device of `mesh` (None without a mesh)."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def put_batch(batch: Any, mesh: Optional[jax.sharding.Mesh], rows: Rows = "local") -> Any:
    """Every host array of the pytree `batch` as a device array; without a mesh, a plain device_put.

    `rows` says what each process passes and how the result is laid out:
      local       this process's rows of the global batch (the data loaders' shards), split over the batch axes;
      global      the whole batch (the same on every process), split over the batch axes;
      replicated  the whole batch, copied to every device: for batches whose size need not divide the
                  batch axes (the step's own sharding constraints split the activations).
    """
    if rows not in ("local", "global", "replicated"):
        raise ValueError(f"rows must be 'local', 'global' or 'replicated', got '{rows}'")
    if mesh is None:
        return jax.device_put(batch)

    def put(x):
        x = np.asarray(x)
        if rows == "local":
            return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
        sharding = batch_sharding(mesh, x.ndim) if rows == "global" else replicated(mesh)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, batch)


def place_state(state: Any, mesh: Optional[jax.sharding.Mesh]) -> Any:
    """A TrainState with every array on `mesh`: sharded params keep their layout, the rest is replicated."""
    if mesh is None:
        return state

    def place(x):
        if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh:
            return x
        return jax.device_put(x, replicated(mesh))

    return dataclasses.replace(state, arrays=jax.tree.map(place, state.arrays))
