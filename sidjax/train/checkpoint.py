"""Orbax checkpoints of a model stage: train state for exact resume, and the stage's output model.

In a model stage's directory (`sidjax.bundle` describes the rest of it):

    checkpoints/<step>/{model,optimizer,data,meta}   train state, for exact resume (last few kept)
    best/<step>/model                                the stage's output model (best valid loss, or last)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from flax import nnx

CHECKPOINTS = "checkpoints"
BEST = "best"


def abstract_like(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`: the target orbax restores into (sharded, no host copy)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def with_shardings(abstract: nnx.State, mesh: Optional[jax.sharding.Mesh]) -> nnx.State:
    """Abstract model state placed by the logical-axis rules on `mesh` (or on the first device)."""
    from sidjax.parallel.rules import named_shardings

    if mesh is not None:
        shardings = named_shardings(abstract, mesh)
    else:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return jax.tree.map(
        lambda s, v: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
        shardings,
        abstract,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


class TrainCheckpoints:
    """Train-state checkpoints of one stage: model + optimizer arrays, data-iterator state, loop metadata.

    Saves are asynchronous and atomic (orbax writes a temporary directory and
    renames it), so a process killed mid-save leaves the previous checkpoint
    intact and `latest_step()` never names a partial one.
    """

    def __init__(self, stage_dir: str | os.PathLike, keep: int):
        self.directory = Path(stage_dir).absolute() / CHECKPOINTS
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_names=("model", "optimizer", "data", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, arrays: nnx.State, data: dict, meta: dict) -> None:
        """`arrays` = `TrainState.arrays` (model, optimizer); `data` = the iterator's get_state()."""
        model, optimizer = arrays[0], arrays[1]
        self._manager.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(model),
                optimizer=ocp.args.StandardSave(optimizer),
                data=ocp.args.JsonSave(data),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def restore(self, step: int, like: nnx.State) -> tuple[nnx.State, dict, dict]:
        """(arrays shaped and sharded like `like`, data-iterator state, meta) of checkpoint `step`."""
        target = abstract_like(like)
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore(target[0]),
                optimizer=ocp.args.StandardRestore(target[1]),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        # Same pytree as `like` (not nested States), so the jitted step sees the structure it was traced with.
        arrays = jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves((out.model, out.optimizer)))
        return arrays, out.data, out.meta

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


class BestModel:
    """The stage's output model: only its parameters, one checkpoint kept (`best/<step>/model`)."""

    def __init__(self, stage_dir: str | os.PathLike):
        self.stage_dir = Path(stage_dir).absolute()
        self._manager = ocp.CheckpointManager(
            self.stage_dir / BEST,
            item_names=("model",),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, model_arrays: nnx.State) -> None:
        self._manager.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model_arrays)), force=True)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def restore_model_arrays(directory: str | os.PathLike, step: int, like: nnx.State) -> nnx.State:
    """The `model` item of checkpoint `directory/<step>` (a `checkpoints/` or `best/` dir), like `like`."""
    manager = ocp.CheckpointManager(Path(directory).absolute(), item_names=("model",))
    try:
        out = manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_like(like))))
    finally:
        manager.close()
    return out.model
