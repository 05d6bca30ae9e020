"""The ONE table mapping logical axis names (on params and activations) to mesh axes.

Modules name their dimensions ("embed", "heads", ...) and never mesh axes, so the
parallelism layout is changed here only. Mesh axes: data, fsdp, tensor (see mesh.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

RULES: dict[str, str | tuple[str, ...] | None] = {
    # activations: batch split over data and fsdp, features over tensor where the weights are
    "activation_batch": ("data", "fsdp"),
    "activation_length": None,
    "activation_embed": None,
    "activation_mlp": "tensor",
    # params: the model dimension fully sharded over fsdp, the wide ones over tensor
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "norm": None,
    "layers": None,
}


def logical_spec(names: Sequence[str | None]) -> PartitionSpec:
    """PartitionSpec of an array whose dimensions carry these logical names."""
    unknown = [n for n in names if n is not None and n not in RULES]
    if unknown:
        raise KeyError(f"logical axis names {unknown} have no rule in sidjax.parallel.rules.RULES")
    return PartitionSpec(*(RULES[n] if n is not None else None for n in names))


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: jax.sharding.Mesh) -> PartitionSpec:
    """Drop mesh axes that do not divide their dimension (e.g. 2 kv heads on a 4-way tensor axis): replicate it."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = 1
        for name in names:
            size *= mesh.shape[name]
        fitted.append(axes if dim % size == 0 else None)
    return PartitionSpec(*fitted)


def variable_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axis names a model parameter was created with."""
    return variable.get_metadata().get("out_sharding")


def named_shardings(state: Any, mesh: jax.sharding.Mesh) -> Any:
    """A NamedSharding per variable of an nnx State (replicated where no logical axes were given)."""

    def one(variable: nnx.Variable) -> NamedSharding:
        axes = variable_axes(variable)
        spec = logical_spec(axes) if axes else PartitionSpec()
        return NamedSharding(mesh, fit_spec(spec, variable.shape, mesh))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Pin an activation's layout by logical names when tracing under a mesh; a no-op otherwise."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, fit_spec(logical_spec(names), x.shape, mesh))
