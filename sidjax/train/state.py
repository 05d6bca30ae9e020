"""The optimizer (AdamW, schedule, clipping, optional frozen LM) and the train state it lives in.

The train state is the model and its `nnx.Optimizer` split once into a static
graph definition and a pytree of arrays, so the jitted step is a pure function
of arrays (donated, sharded, checkpointed as one tree).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

# (param path, param) -> a multiplier broadcastable to the param: 0 freezes, 1 trains.
UpdateScale = Callable[[tuple[str, ...], jax.Array], Any]


def learning_rate_schedule(c: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `c.learning_rate`, then `c.decay` down to `learning_rate * end_lr_ratio`."""
    peak, end = c.learning_rate, c.learning_rate * c.end_lr_ratio
    warmup = min(c.warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if c.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=c.end_lr_ratio)
    elif c.decay == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def param_path(path: tuple) -> tuple[str, ...]:
    """A jax key path inside an nnx.State as plain names, e.g. ('embed', 'embedding')."""
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
            continue
        names.append(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))))
    return tuple(names)


def _decays(path: tuple, param: jax.Array) -> bool:
    """Weight decay only on matrices: norms' scales and biases are left alone."""
    return param.ndim >= 2


def scale_updates(scale: UpdateScale) -> optax.GradientTransformation:
    """Multiply each final update by `scale(path, param)`: zero rows stay exactly unchanged."""

    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None):
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, u: (u * jnp.asarray(scale(param_path(path), u), u.dtype)).astype(u.dtype), updates
        )
        return scaled, state

    return optax.GradientTransformation(init, update)


# The section's fields make_tx reads: equal settings give the same transformation object.
_TX_FIELDS = ("learning_rate", "end_lr_ratio", "warmup_steps", "decay", "max_grad_norm", "adam_b1", "adam_b2",
              "adam_eps", "weight_decay")


def make_tx(
    c: ml_collections.ConfigDict, total_steps: int, update_scale: Optional[UpdateScale] = None
) -> optax.GradientTransformation:
    """Clip by global norm -> AdamW(schedule) -> optional per-parameter update scale (frozen rows).

    Memoised on the settings: the optimizer is part of a train state's static graph definition, so a
    second model trained under the same settings (another lineage's seed) reuses the compiled step.
    """
    return _tx(tuple(c[name] for name in _TX_FIELDS), total_steps, update_scale)


@functools.lru_cache(maxsize=64)
def _tx(settings: tuple, total_steps: int, update_scale: Optional[UpdateScale]) -> optax.GradientTransformation:
    c = ml_collections.ConfigDict(dict(zip(_TX_FIELDS, settings)))
    chain = []
    if c.max_grad_norm > 0:
        chain.append(optax.clip_by_global_norm(c.max_grad_norm))
    chain.append(
        optax.adamw(
            learning_rate_schedule(c, total_steps),
            b1=c.adam_b1,
            b2=c.adam_b2,
            eps=c.adam_eps,
            weight_decay=c.weight_decay,
            mask=lambda params: jax.tree_util.tree_map_with_path(_decays, params),
        )
    )
    if update_scale is not None:
        chain.append(scale_updates(update_scale))
    return optax.chain(*chain)


@dataclasses.dataclass
class TrainState:
    """`(model, optimizer)` as a static graph definition plus one pytree of arrays.

    `arrays` is what the jitted step takes, donates and returns, and what a
    checkpoint stores; `model()` rebuilds a live module for evaluation or export.
    """

    graphdef: nnx.GraphDef
    arrays: nnx.State
    wrt: Any

    @classmethod
    def create(cls, model: nnx.Module, tx: optax.GradientTransformation, wrt: Any = nnx.Param) -> "TrainState":
        optimizer = nnx.Optimizer(model, tx, wrt=wrt)
        graphdef, arrays = nnx.split((model, optimizer))
        return cls(graphdef, arrays, wrt)

    def merge(self) -> tuple[nnx.Module, nnx.Optimizer]:
        return nnx.merge(self.graphdef, self.arrays)

    def model(self) -> nnx.Module:
        return self.merge()[0]

    @property
    def step(self) -> int:
        """Optimizer steps taken (a host sync: call it between steps, not inside one)."""
        return int(self.arrays[1]["step"][...])

    def model_arrays(self) -> nnx.State:
        return self.arrays[0]


# What a frozen-LM run gives the optimizer at all: the vocabulary tables (their old rows then masked).
VOCAB_PARAMS = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("embed"), nnx.PathContains("lm_head")))


def frozen_lm(model: nnx.Module, first_new_row: int) -> tuple[Any, UpdateScale]:
    """(`wrt`, `update_scale`) that train only vocabulary rows >= `first_new_row` (the added SID tokens).

    Only the embedding / output tables get gradients and optimizer state; their
    pretrained rows get zero updates (weight decay included), so they stay bit-exact.
    """
    from sidjax.model.vocab import new_rows_mask

    masks = dict(nnx.to_flat_state(new_rows_mask(model, first_new_row)))

    def update_scale(path: tuple[str, ...], _: jax.Array) -> jax.Array:
        return masks[path].get_value()

    return VOCAB_PARAMS, update_scale


def make_train_state(
    model: nnx.Module,
    c: ml_collections.ConfigDict,
    total_steps: int,
    *,
    wrt: Any = nnx.Param,
    update_scale: Optional[UpdateScale] = None,
) -> TrainState:
    """The train state for `model` under trainer section `c` (see `sidjax.configs.sft`).

    `wrt` selects the parameters the optimizer owns (others get no gradient and
    no optimizer state); `update_scale` freezes parts of them (SID rows only).
    """
    return TrainState.create(model, make_tx(c, total_steps, update_scale), wrt)
