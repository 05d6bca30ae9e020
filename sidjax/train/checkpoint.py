"""Orbax checkpoints of a model stage, and the model bundle that reloads a model from one directory.

Layout of a model stage's directory (e.g. `workdir/sft/`):

    checkpoints/<step>/{model,optimizer,data,meta}   train state, for exact resume (last few kept)
    best/<step>/model                                the stage's output model (best valid loss, or last)
    bundle.json                                      {"step": <best step>, "level_offsets": [...], ...}
    model_config.json  tokenizer.json  tokenizer_config.json  sids.npy  config.json

`load_bundle(stage_dir)` rebuilds the model (sharded onto a mesh if given),
the tokenizer, the SID table, the level offsets and the resolved config; it is
what later stages, `sidjax.load` and eval call. `save_bundle` writes the
non-array files once, before training starts.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from sidjax.model.config import ModelConfig

CHECKPOINTS = "checkpoints"
BEST = "best"
BUNDLE = "bundle.json"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SIDS = "sids.npy"
CONFIG = "config.json"


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


@dataclasses.dataclass
class Bundle:
    """Everything needed to use a trained model: what `load_bundle` returns."""

    model: nnx.Module
    tokenizer: Any  # tokenizers.Tokenizer
    sids: np.ndarray  # int32 [num_items, L]
    level_offsets: np.ndarray  # int32 [L]
    config: ml_collections.ConfigDict  # the resolved config of the run that trained it
    step: int
    directory: Path
    tokenizer_config: dict = dataclasses.field(default_factory=dict)  # eos_token, chat_template, ... ({} if none)
    first_new_row: int = 0  # vocabulary rows >= this were added to a pretrained LM (what a frozen-LM run trains)


def save_bundle(
    stage_dir: str | os.PathLike,
    *,
    model_config: ModelConfig,
    tokenizer: Any,
    sids: np.ndarray,
    level_offsets: np.ndarray,
    config: ml_collections.ConfigDict,
    tokenizer_config: Optional[dict] = None,
    first_new_row: int = 0,
) -> None:
    """Write the bundle's non-array files (process 0); `finish_bundle` names the model step at the end.

    `tokenizer_config` is the HF tokenizer_config.json content (eos_token, chat_template, ...) that
    `ChatFormat.from_hf_dir(stage_dir)` reads back.
    """
    if jax.process_index() != 0:
        return
    d = Path(stage_dir)
    d.mkdir(parents=True, exist_ok=True)
    model_config.to_json(str(d / MODEL_CONFIG))
    tokenizer.save(str(d / TOKENIZER))
    np.save(d / SIDS, np.asarray(sids, np.int32))
    (d / CONFIG).write_text(config.to_json_best_effort(indent=2, sort_keys=True), encoding="utf-8")
    if tokenizer_config is not None:
        _write_json(d / TOKENIZER_CONFIG, tokenizer_config)
    _write_json(d / BUNDLE, {"step": None, "level_offsets": np.asarray(level_offsets).tolist(),
                             "first_new_row": int(first_new_row)})


def read_bundle_step(stage_dir: str | os.PathLike) -> Optional[int]:
    """The model step a stage's bundle names: None while the stage has not finished (or wrote no bundle)."""
    path = Path(stage_dir) / BUNDLE
    return json.loads(path.read_text(encoding="utf-8")).get("step") if path.is_file() else None


def finish_bundle(stage_dir: str | os.PathLike, step: int, **info: Any) -> None:
    """Record which `best/<step>` is the bundle's model (plus JSON-able `info`, e.g. its valid loss)."""
    if jax.process_index() != 0:
        return
    path = Path(stage_dir) / BUNDLE
    bundle = json.loads(path.read_text(encoding="utf-8"))
    bundle.update(info, step=int(step))
    _write_json(path, bundle)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _required(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a model bundle: {name} is missing")
    return path


def load_bundle(
    stage_dir: str | os.PathLike,
    *,
    step: Optional[int] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> Bundle:
    """Reload a model stage's output from its directory (e.g. `workdir/sft`).

    `step=None` loads the stage's output model (`best/`); a step number loads
    the model of that train checkpoint instead. With a `mesh`, parameters are
    restored straight into their shards.
    """
    from tokenizers import Tokenizer

    from sidjax.model.transformer import CausalLM

    d = Path(stage_dir).absolute()
    bundle = json.loads(_required(d, BUNDLE).read_text(encoding="utf-8"))
    model_config = ModelConfig.from_json(str(_required(d, MODEL_CONFIG)))
    if step is None:
        if bundle.get("step") is None:
            raise FileNotFoundError(f"{d / BUNDLE} names no model step: the stage that writes it has not finished")
        directory, step = d / BEST, int(bundle["step"])
    else:
        directory = d / CHECKPOINTS
    abstract = nnx.eval_shape(lambda: CausalLM(model_config, rngs=nnx.Rngs(0)))
    graphdef, like = nnx.split(abstract)
    like = with_shardings(like, mesh)
    arrays = restore_model_arrays(directory, step, like)
    config = ml_collections.ConfigDict(json.loads(_required(d, CONFIG).read_text(encoding="utf-8")))
    tokenizer_config_path = d / TOKENIZER_CONFIG
    tokenizer_config = (
        json.loads(tokenizer_config_path.read_text(encoding="utf-8")) if tokenizer_config_path.is_file() else {}
    )
    return Bundle(
        model=nnx.merge(graphdef, arrays),
        tokenizer=Tokenizer.from_file(str(_required(d, TOKENIZER))),
        sids=np.load(_required(d, SIDS)),
        level_offsets=np.asarray(bundle["level_offsets"], np.int32),
        config=config,
        step=step,
        directory=d,
        tokenizer_config=tokenizer_config,
        first_new_row=int(bundle.get("first_new_row", 0)),
    )
