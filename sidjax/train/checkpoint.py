"""Orbax checkpoints of a model stage: train state for exact resume, and the stage's output model.

In a model stage's directory (`sidjax.bundle` describes the rest of it):

    checkpoints/<step>/{model,optimizer,data,meta}   train state, for exact resume (last few kept)
    best/<step>/model                                the stage's output model (best valid loss, or last)

Each step directory gets a `SHA256SUMS` manifest (`sidjax.utils.checksums`) once orbax has finished
writing it (saves are asynchronous: the manifest is written by the next save, `wait` or `close`).
Restores check it and refuse NaN / Inf parameters; a damaged train checkpoint is set aside
(`checkpoints/damaged_<step>`) and the newest intact one kept beside it is resumed instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from sidjax.utils.checksums import DamagedFileError, verify_manifest, write_manifest

CHECKPOINTS = "checkpoints"
BEST = "best"
DAMAGED_PREFIX = "damaged_"


class NonFiniteParamsError(ValueError):
    """A restored checkpoint holds NaN or Inf parameters: it is damaged (or was saved from a diverged run)."""


class DamagedCheckpointError(ValueError):
    """No train checkpoint of a stage is intact, so the run cannot resume."""


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
        self._unsealed: list[int] = []

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, arrays: nnx.State, data: dict, meta: dict) -> None:
        """`arrays` = `TrainState.arrays` (model, optimizer); `data` = the iterator's get_state()."""
        self.wait()  # orbax waits for the previous save anyway; its manifest is written now
        model, optimizer = arrays[0], arrays[1]
        self._unsealed.append(step)
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

    def restore_latest(self, like: nnx.State) -> Optional[tuple[int, nnx.State, dict, dict]]:
        """(step, arrays, data, meta) of the newest intact checkpoint; None when there is none yet.

        A damaged newer one (checksum mismatch, NaN / Inf parameters) is logged, set aside as
        `damaged_<step>` (so the resumed run can save that step again) and the next older one used.
        """
        damaged: list[tuple[int, Exception]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self.restore(step, like)
            except (DamagedFileError, NonFiniteParamsError) as e:
                logging.warning("train checkpoint %s is damaged: %s", self.directory / str(step), e)
                damaged.append((step, e))
                continue
            if damaged:
                logging.warning("train checkpoint step(s) %s damaged (moved to %s<step>); resuming from the older "
                                "step %d instead", [s for s, _ in damaged], self.directory / DAMAGED_PREFIX, step)
                self._set_aside([s for s, _ in damaged])
            return (step, *restored)
        if damaged:
            reasons = "; ".join(f"step {s}: {e}" for s, e in damaged)
            raise DamagedCheckpointError(f"{self.directory}: no intact train checkpoint to resume from ({reasons}); "
                                         f"remove {self.directory} to train from the start")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        if jax.process_index() == 0:
            for step in steps:
                os.replace(self.directory / str(step), self.directory / f"{DAMAGED_PREFIX}{step}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("sidjax: damaged checkpoints set aside")
        self._manager.reload()

    def restore(self, step: int, like: nnx.State) -> tuple[nnx.State, dict, dict]:
        """(arrays shaped and sharded like `like`, data-iterator state, meta) of checkpoint `step`.

        Raises `DamagedFileError` (a file differs from its checksum) or `NonFiniteParamsError`.
        """
        step_dir = self.directory / str(step)
        _verify(step_dir)
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
        check_finite(out.model, step_dir, "model")
        check_finite(out.optimizer, step_dir, "optimizer")
        return arrays, out.data, out.meta

    def wait(self) -> None:
        self._manager.wait_until_finished()
        _seal(self.directory, self._unsealed)
        self._unsealed = []

    def close(self) -> None:
        self.wait()
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
        self._unsealed: list[int] = []

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, model_arrays: nnx.State) -> None:
        self.wait()
        self._unsealed.append(step)
        self._manager.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model_arrays)), force=True)

    def wait(self) -> None:
        self._manager.wait_until_finished()
        _seal(self.stage_dir / BEST, self._unsealed)
        self._unsealed = []

    def close(self) -> None:
        self.wait()
        self._manager.close()


def restore_model_arrays(directory: str | os.PathLike, step: int, like: nnx.State) -> nnx.State:
    """The `model` item of checkpoint `directory/<step>` (a `checkpoints/` or `best/` dir), like `like`."""
    step_dir = Path(directory).absolute() / str(step)
    _verify(step_dir)
    manager = ocp.CheckpointManager(Path(directory).absolute(), item_names=("model",))
    try:
        out = manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_like(like))))
    finally:
        manager.close()
    check_finite(out.model, step_dir, "model")
    return out.model


def check_finite(tree: Any, where: Path, item: str) -> None:
    """Refuse a restored tree with NaN / Inf in a floating-point array, naming the first such parameter."""
    leaves = [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    finite = jax.device_get(_all_finite([x for _, x in leaves]))
    bad = [_path_name(path) for (path, _), ok in zip(leaves, finite) if not ok]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise NonFiniteParamsError(f"{where}: {item} parameter '{bad[0]}'{more} holds NaN or Inf values: "
                                   "the checkpoint is damaged or was saved from a diverged run")


@jax.jit
def _all_finite(xs: list[jax.Array]) -> list[jax.Array]:
    return [jnp.isfinite(x).all() for x in xs]


def _path_name(path: tuple) -> str:
    parts = []
    for key in path:
        part = getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))
        if part != "value":
            parts.append(str(part))
    return ".".join(parts)


def _verify(step_dir: Path) -> None:
    if not step_dir.is_dir():
        return  # orbax names the missing step
    if not verify_manifest(step_dir):
        logging.warning("%s has no checksums (saved before sidjax wrote them, or killed as it saved): read unchecked",
                        step_dir)


def _seal(directory: Path, steps: list[int]) -> None:
    """Write the manifest of each step directory orbax has finished (process 0)."""
    if jax.process_index() == 0:
        for step in steps:
            step_dir = directory / str(step)
            if step_dir.is_dir():  # gone when a later save already replaced it (max_to_keep)
                write_manifest(step_dir)
