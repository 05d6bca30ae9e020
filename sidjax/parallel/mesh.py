"""The device mesh from `config.mesh` (axes data, fsdp, tensor) and sharded model placement."""
from __future__ import annotations

import math
from typing import Callable, Mapping, TypeVar

import jax
from flax import nnx

from sidjax.parallel.rules import MESH_AXES, named_shardings

M = TypeVar("M", bound=nnx.Module)


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Axis sizes in MESH_AXES order; one axis may be -1 and takes what is left."""
    shape = [int(sizes[name]) for name in MESH_AXES]
    inferred = [i for i, s in enumerate(shape) if s == -1]
    if len(inferred) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
    bad = [MESH_AXES[i] for i, s in enumerate(shape) if s == 0 or s < -1]
    if bad:
        raise ValueError(f"config.mesh.{bad[0]} must be >= 1 or -1, got {sizes[bad[0]]}")
    known = math.prod(s for s in shape if s != -1)
    if inferred:
        if num_devices % known:
            raise ValueError(f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
                             f"{dict(zip(MESH_AXES, shape))}")
        shape[inferred[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(f"config.mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                         f"have {num_devices}")
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
    """An Auto-typed (GSPMD) mesh over all devices (or `devices`) with axes data, fsdp, tensor."""
    devices = devices if devices is not None else jax.devices()
    shape = mesh_shape(sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def shard_model(model: M, mesh: jax.sharding.Mesh) -> M:
    """Move every parameter of `model` onto `mesh` according to its logical axes (in place)."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, named_shardings(state, mesh)))
    return model


def create_sharded(factory: Callable[[], M], mesh: jax.sharding.Mesh) -> M:
    """Build a model with each parameter initialised directly in its shards (no full host copy)."""
    abstract = nnx.eval_shape(factory)
    shardings = named_shardings(nnx.state(abstract), mesh)

    @nnx.jit
    def build():
        model = factory()
        state = nnx.state(model)
        nnx.update(model, jax.lax.with_sharding_constraint(state, shardings))
        return model

    with jax.set_mesh(mesh):
        return build()
