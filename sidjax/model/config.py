"""Architecture hyper-parameters of the causal LM (Qwen2 / Qwen2.5 / Qwen3 / Llama families).

A frozen, hashable dataclass: it lives inside the NNX module as static metadata, so
jit caches compiled steps per config, and it round-trips through JSON so a checkpoint
directory can rebuild its model.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from sidjax.model.dropout import keep_levels

ATTENTION_IMPLS = ("einsum", "xla")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
REMAT = ("none", "dots", "full")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """The RoPE frequency-scaling variants HF configs use (`rope_scaling` / `rope_parameters`)."""

    type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int = 0  # llama3, yarn
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn; None: derived from factor
    truncate: bool = True  # yarn


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One decoder-only transformer; field names follow the HF config where one exists."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = False  # Qwen2 / Qwen2.5: bias on q, k, v projections.
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE.
    dtype: str = "float32"  # activations / matmul compute
    param_dtype: str = "float32"  # stored parameters
    attention_impl: str = "einsum"  # einsum | xla (jax.nn.dot_product_attention)
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    remat: str = "none"  # what each layer keeps for backward: none (all) | dots (matmul outputs) | full (input)
    # Training-time dropout on the embeddings and on both residual branches (models trained from scratch);
    # only forward passes given a dropout key apply it (the SFT train step), never eval or decoding.
    dropout: float = 0.0

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                    "intermediate_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"ModelConfig.attention_impl must be one of {ATTENTION_IMPLS}, "
                             f"got '{self.attention_impl}'")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"ModelConfig.{name} must be one of {DTYPES}, got '{getattr(self, name)}'")
        if self.remat not in REMAT:
            raise ValueError(f"ModelConfig.remat must be one of {REMAT}, got '{self.remat}'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        try:
            keep_levels(self.dropout)
        except ValueError as e:
            raise ValueError(f"ModelConfig.dropout: {e}") from None
        if self.rope_scaling.type not in ROPE_TYPES:
            raise ValueError(f"ModelConfig.rope_scaling.type must be one of {ROPE_TYPES}, "
                             f"got '{self.rope_scaling.type}'")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        e, h, k, d, f = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        attn = e * (h + 2 * k) * d + h * d * e + (h + 2 * k) * d * self.attention_bias + 2 * d * self.qk_norm
        layer = attn + 3 * e * f + 2 * e
        head = 0 if self.tie_word_embeddings else self.vocab_size * e
        return self.vocab_size * e + self.num_layers * layer + e + head

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown} (known: {sorted(known)})")
        values = dict(values)
        if isinstance(values.get("rope_scaling"), dict):
            values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
        return cls(**values)

    def to_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_json(cls, path: str) -> "ModelConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))


def rope_inv_freq(config: ModelConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim // 2] and the cos/sin scale, as transformers computes them."""
    dim = config.head_dim
    base = config.rope_theta
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    s = config.rope_scaling
    scale = 1.0
    if s.type == "linear":
        inv_freq = inv_freq / s.factor
    elif s.type == "llama3":
        old_len = s.original_max_position_embeddings
        low_wavelen, high_wavelen = old_len / s.low_freq_factor, old_len / s.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
        smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled)
    elif s.type == "yarn":
        inv_freq, scale = _yarn(inv_freq, dim, base, s)
    return inv_freq.astype(np.float32), float(scale)


def _yarn(inv_freq: np.ndarray, dim: int, base: float, s: RopeScaling) -> tuple[np.ndarray, float]:
    scale = s.attention_factor
    if scale is None:
        scale = 1.0 if s.factor <= 1 else 0.1 * math.log(s.factor) + 1.0

    def correction_dim(rotations: float) -> float:
        return dim * math.log(s.original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = inv_freq / s.factor * (1 - extrapolation) + inv_freq * extrapolation
    return inv_freq, scale


_PRESETS = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                 intermediate_size=128, max_position_embeddings=512),
    "demo": dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64,
                 intermediate_size=768, max_position_embeddings=1024),
    "small": dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=32,
                  intermediate_size=512, max_position_embeddings=512),
}
PRESETS = tuple(_PRESETS)


def preset(name: str, vocab_size: int) -> ModelConfig:
    """Small Qwen3-style configs for training from scratch.

    `tiny` (tests), `demo` (CPU demo, a few M params), `small` (results runs on the ~36k-sample Amazon
    categories: SASRec/TIGER-sized, meant to be trained with `dropout`).
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset '{name}' (known: {PRESETS})")
    return ModelConfig(vocab_size=vocab_size, rope_theta=1_000_000.0, qk_norm=True, tie_word_embeddings=True,
                       **_PRESETS[name])


def scratch(name: str, vocab_size: int, *, shape: Mapping[str, int] | None = None,
            dropout: float = 0.0) -> ModelConfig:
    """The config of a model trained from scratch: preset `name`, its `shape` entries replaced
    where non-zero (0 keeps the preset's value), and training-time `dropout`."""
    changes = {key: value for key, value in (shape or {}).items() if value}
    return preset(name, vocab_size).replace(dropout=dropout, **changes)
