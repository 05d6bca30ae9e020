"""Per-device memory plan of a training run, and the check that refuses a run that cannot fit.

An out-of-memory error after minutes of compilation on a pod (or hours into a run, at the
first long bucket) is the most expensive way to learn a layout is wrong. So before a model
stage starts, this module adds up what each device will hold at the peak of a train step:

- params, optimizer moments (AdamW: mu and nu in the parameter dtype, as optax keeps them)
  and gradients, each sharded exactly as `sidjax.parallel.rules` places the model's
  parameters (read from the model's own logical axes, so there is one source of truth),
  plus the all-gathered weights when fsdp > 1 (the step computes with weights whole over fsdp);
- activations kept for the backward pass under the remat policy (`none`: everything,
  `dots`: matmul outputs, `full`: each layer's input, the layer is recomputed), per local
  batch row (batch split over the rules' batch axes) and per local head / mlp shard;
- the loss's float32 logits for `logits_chunk` positions (the whole sequence when 0);
- a reference model (GRPO's KL) and the rollout KV cache
  (sequences x length x layers x kv_heads x head_dim x 2);
- on XLA's CPU backend, the transposed operands `sidjax.model.linear` writes out in the backward
  pass: one weight matrix and one activation at a time (the largest of each).

The activation terms are per-token element counts of this transformer's backward
residuals; tests/test_memory.py compares the total with XLA's own accounting
(`compiled.memory_analysis()`) of the real jitted SFT step. `sidjax.stages.memory_check`
reads a stage's workload from its config and names the config keys in a refusal.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx

from sidjax.model.config import REMAT as REMAT_POLICIES
from sidjax.model.config import ModelConfig
from sidjax.model.linear import writes_transposes
from sidjax.parallel.rules import RULES, fit_spec, logical_spec, variable_axes

GIB = 1 << 30


class MemoryPlanError(RuntimeError):
    """A run whose per-device memory plan exceeds the device; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one train step holds, in global (all-device) terms."""

    batch_size: int  # sequences per optimizer step
    seq_len: int  # longest padded sequence
    grad_accum_steps: int = 1
    logits_chunk: int = 0  # 0: logits for the whole sequence at once
    remat: str = "none"
    reference_model: bool = False  # GRPO with a KL term keeps a frozen copy of the params
    rollout_sequences: int = 0  # GRPO: prompts x group size decoded at once
    rollout_len: int = 0  # GRPO: prompt + generated tokens

    def __post_init__(self) -> None:
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat policy must be one of {REMAT_POLICIES}, got '{self.remat}'")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"grad_accum_steps {self.grad_accum_steps} must divide batch_size {self.batch_size}")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum_steps


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of each part of a train step at its peak."""

    params: int
    gathered: int
    optimizer: int
    grads: int
    activations: int
    logits: int
    reference: int
    kv_cache: int
    transposes: int
    mesh: tuple[tuple[str, int], ...]
    workload: Workload

    @property
    def total(self) -> int:
        state = self.params + self.optimizer + self.reference
        # Rollouts and the update are separate jitted calls: their buffers are never live together.
        step = self.gathered + self.grads + self.activations + self.logits + self.transposes
        return state + max(step, self.kv_cache)

    def describe(self) -> str:
        parts = ("params", "gathered", "optimizer", "grads", "activations", "logits", "reference", "kv_cache",
                 "transposes")
        rows = ", ".join(f"{p} {getattr(self, p) / GIB:.2f}" for p in parts if getattr(self, p))
        return f"{self.total / GIB:.2f} GiB per device on mesh {dict(self.mesh)} ({rows} GiB)"


def _itemsize(dtype: str) -> int:
    return jnp.dtype(dtype).itemsize


def _split(logical: str, sizes: Mapping[str, int]) -> int:
    """How many ways RULES splits a dimension with this logical name."""
    axes = RULES[logical]
    return math.prod(sizes[n] for n in ((axes,) if isinstance(axes, str) else tuple(axes or ())))


def _local(size: int, logical: str, sizes: Mapping[str, int]) -> int:
    """A dimension's per-device extent under RULES (replicated when the mesh axes do not divide it)."""
    split = _split(logical, sizes)
    return size // split if size % split == 0 else size


@functools.lru_cache(maxsize=32)
def _sharded_param_elements(model_config: ModelConfig, mesh_items: tuple[tuple[str, int], ...]) -> int:
    """Parameter elements each device holds, placed by the model's logical axes (no arrays are built)."""
    from sidjax.model.transformer import CausalLM

    sizes = dict(mesh_items)
    abstract = nnx.state(nnx.eval_shape(lambda: CausalLM(model_config, rngs=nnx.Rngs(0))), nnx.Param)
    mesh = types.SimpleNamespace(shape=dict(sizes))  # fit_spec only reads axis sizes
    total = 0
    for variable in jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        axes = variable_axes(variable)
        spec = fit_spec(logical_spec(axes), variable.shape, mesh) if axes else ()
        split = 1
        for entry in spec:
            for name in (entry,) if isinstance(entry, str) else tuple(entry or ()):
                split *= sizes[name]
        total += math.prod(variable.shape) // split
    return total


def _layer_elements(c: ModelConfig, sizes: Mapping[str, int], seq_len: int, remat: str) -> tuple[int, int]:
    """(elements kept per token per layer for the backward pass, elements live while one layer is recomputed).

    A recomputed layer holds its activations and, while it is back-propagated, their gradients: twice
    its `everything`.
    """
    e = c.hidden_size
    h = _local(c.num_heads, "heads", sizes)
    k = _local(c.num_kv_heads, "kv_heads", sizes)
    f = _local(c.intermediate_size, "activation_mlp", sizes)
    d = c.head_dim
    # Residual stream, both norms' inputs/outputs, attention and MLP outputs; q/k/v before and after
    # RoPE; the attended values; float32 scores, mask and probabilities over the keys; gate, up,
    # silu(gate) and their product.
    everything = 6 * e + 2 * (h + 2 * k) * d + h * d + 3 * h * seq_len + 4 * f
    if remat == "none":
        return everything, 0
    if remat == "dots":
        return e + (h + 2 * k) * d + 2 * e + 2 * f, 2 * everything
    return e, 2 * everything


def _transposed_elements(c: ModelConfig, sizes: Mapping[str, int], tokens: int) -> int:
    """The largest weight matrix and the largest activation the CPU backward writes out transposed, local."""
    e, d = c.hidden_size, c.head_dim
    h = _local(c.num_heads, "heads", sizes)
    f = _local(c.intermediate_size, "activation_mlp", sizes)
    weights = [e * h * d, e * f]
    if not c.tie_word_embeddings:  # an untied output layer's input gradient reads lm_head transposed
        weights.append(e * _local(c.vocab_size, "vocab", sizes))
    return max(weights) + tokens * max(e, f, h * d)


def estimate(model_config: ModelConfig, mesh_sizes: Mapping[str, int], workload: Workload) -> MemoryPlan:
    """Per-device bytes of a train step of `model_config` on a mesh with these axis sizes."""
    c, w = model_config, workload
    sizes = {name: int(mesh_sizes[name]) for name in ("data", "fsdp", "tensor")}
    param_bytes = _sharded_param_elements(c, tuple(sizes.items())) * _itemsize(c.param_dtype)
    act_bytes = _itemsize(c.dtype)
    rows = math.ceil(w.micro_batch / _split("activation_batch", sizes))
    kept, recomputed = _layer_elements(c, sizes, w.seq_len, w.remat)
    activations = rows * w.seq_len * (c.num_layers * kept + recomputed) * act_bytes
    vocab = _local(c.vocab_size, "vocab", sizes)
    chunk = w.seq_len if w.logits_chunk <= 0 else min(w.logits_chunk, w.seq_len)
    logits = rows * chunk * vocab * 4 * 3  # float32 logits, their softmax and their gradient
    # The step's gradient tree, plus a float32 accumulator when micro-batches are summed.
    grads = param_bytes + (param_bytes // _itemsize(c.param_dtype) * 4 if w.grad_accum_steps > 1 else 0)
    kv_rows = math.ceil(w.rollout_sequences / _split("activation_batch", sizes))
    kv_heads = _local(c.num_kv_heads, "kv_heads", sizes)
    kv_cache = kv_rows * w.rollout_len * c.num_layers * kv_heads * c.head_dim * 2 * act_bytes
    return MemoryPlan(
        params=param_bytes,
        gathered=param_bytes * (sizes["fsdp"] - 1),
        optimizer=2 * param_bytes,
        grads=grads,
        activations=activations,
        logits=logits,
        reference=param_bytes if w.reference_model else 0,
        kv_cache=kv_cache,
        transposes=_transposed_elements(c, sizes, rows * w.seq_len) * act_bytes if writes_transposes() else 0,
        mesh=tuple(sizes.items()),
        workload=w,
    )


def device_capacity(gib: float = 0.0) -> int:
    """Bytes one device can hold: `gib` when set, else what the device reports.

    CPU devices report no limit; they share the host's RAM, so each gets its part of it.
    """
    if gib > 0:
        return int(gib * GIB)
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform != "cpu":
        raise MemoryPlanError(f"{device.platform} device reports no memory limit: give its size in GiB")
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return host // jax.local_device_count()


Layout = tuple[dict[str, int], Workload]


def _changes(model_config: ModelConfig, sizes: dict[str, int], w: Workload) -> list[tuple[str, Any]]:
    """(label, layout -> layout) of the changes that shrink a step without changing what it computes."""
    changes: list[tuple[str, Any]] = []
    if w.remat != "full":
        changes.append(("remat='full'", lambda s, x: (s, dataclasses.replace(x, remat="full"))))
    if sizes["data"] > 1:
        changes.append((f"fsdp={sizes['fsdp'] * 2} (data={sizes['data'] // 2})",
                        lambda s, x: (dict(s, data=s["data"] // 2, fsdp=s["fsdp"] * 2), x)))
    if w.logits_chunk <= 0 or w.logits_chunk > 256:
        changes.append(("logits_chunk=256", lambda s, x: (s, dataclasses.replace(x, logits_chunk=256))))
    if w.micro_batch % 2 == 0:
        changes.append((f"grad_accum_steps={w.grad_accum_steps * 2} (same batch, half the rows at once)",
                        lambda s, x: (s, dataclasses.replace(x, grad_accum_steps=x.grad_accum_steps * 2))))
    return changes


def _alternatives(model_config: ModelConfig, sizes: dict[str, int], w: Workload, budget: int) -> list[str]:
    """Each change alone, all of them together, and a halved batch, each re-estimated."""
    changes = _changes(model_config, sizes, w)
    trials: list[tuple[str, Layout]] = [(label, change(sizes, w)) for label, change in changes]
    if len(changes) > 1:
        layout: Layout = (sizes, w)
        for _, change in changes:
            layout = change(*layout)
        trials.append(("all of " + ", ".join(label for label, _ in changes), layout))
    if w.micro_batch % 2 == 0:
        trials.append((f"batch_size={w.batch_size // 2} (changes the training)",
                       (sizes, dataclasses.replace(w, batch_size=w.batch_size // 2))))
    out = []
    for label, (s, trial) in trials:
        total = estimate(model_config, s, trial).total
        out.append(f"{label}: {total / GIB:.2f} GiB{' (fits)' if total <= budget else ''}")
    return out


def ensure_fits(plan: MemoryPlan, model_config: ModelConfig, capacity: int, margin: float) -> None:
    """Raise MemoryPlanError when `plan` needs more than `capacity * (1 - margin)` bytes per device."""
    budget = int(capacity * (1.0 - margin))
    if plan.total <= budget:
        logging.info("memory plan: %s; budget %.2f GiB", plan.describe(), budget / GIB)
        return
    options = "\n  ".join(_alternatives(model_config, dict(plan.mesh), plan.workload, budget))
    raise MemoryPlanError(
        f"this run needs {plan.describe()}, more than the {budget / GIB:.2f} GiB budget per device "
        f"({capacity / GIB:.2f} GiB less a margin of {margin}). Estimated with these changes:\n  "
        f"{options}")
