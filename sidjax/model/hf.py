"""HF checkpoints in and out: a local transformers directory <-> CausalLM (+ its tokenizer).

Reading memory-maps the safetensors files and fills each device shard straight from the
map, so the host never holds a second full copy of the model. Names and shapes follow one
declarative table (`_TABLE`); a tensor the table does not expect, or one it expects but
the files lack, is an error that names it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import tokenizers
from absl import logging
from flax import nnx

from sidjax.model.config import ModelConfig, RopeScaling
from sidjax.model.transformer import CausalLM
from sidjax.parallel.rules import named_shardings

# model_type -> (architecture class name, q/k/v bias (None: from config.attention_bias), q/k norm)
FAMILIES: dict[str, tuple[str, bool | None, bool]] = {
    "llama": ("LlamaForCausalLM", None, False),
    "qwen2": ("Qwen2ForCausalLM", True, False),
    "qwen3": ("Qwen3ForCausalLM", None, True),
}

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One HF tensor <-> one model parameter.

    `in_dims` > 0 marks an nn.Linear weight [out, in]: ours is its transpose reshaped, whose
    first `in_dims` axes are the input side. `flat` marks a vector that we keep as [heads, head_dim].
    """

    hf: str  # may contain {i} (layer index)
    ours: tuple[str, ...]  # path into nnx.state(model); "{i}" becomes the layer index
    in_dims: int = 0
    flat: bool = False

    def name(self, i: int) -> str:
        return self.hf.format(i=i)

    def path(self, i: int) -> tuple[str | int, ...]:
        return tuple(i if p == "{i}" else p for p in self.ours)

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.in_dims:
            return math.prod(shape[self.in_dims:]), math.prod(shape[:self.in_dims])
        return (math.prod(shape),) if self.flat else tuple(shape)

    def to_ours(self, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return (w.T if self.in_dims else w).reshape(shape)

    def to_hf(self, w: np.ndarray) -> np.ndarray:
        return w.reshape(self.hf_shape(w.shape)[::-1]).T if self.in_dims else w.reshape(self.hf_shape(w.shape))


def _layer(name: str, ours: tuple[str, ...], in_dims: int = 0, flat: bool = False) -> Entry:
    return Entry(f"model.layers.{{i}}.{name}", ("layers", "{i}") + ours, in_dims, flat)


def table(config: ModelConfig) -> list[Entry]:
    """The HF <-> sidjax name/shape mapping for this architecture."""
    entries = [
        Entry("model.embed_tokens.weight", ("embed",)),
        Entry("model.norm.weight", ("final_norm", "scale")),
        _layer("input_layernorm.weight", ("input_norm", "scale")),
        _layer("post_attention_layernorm.weight", ("post_attention_norm", "scale")),
        _layer("self_attn.q_proj.weight", ("attn", "q_proj"), 1),
        _layer("self_attn.k_proj.weight", ("attn", "k_proj"), 1),
        _layer("self_attn.v_proj.weight", ("attn", "v_proj"), 1),
        _layer("self_attn.o_proj.weight", ("attn", "o_proj"), 2),
        _layer("mlp.gate_proj.weight", ("mlp", "gate_proj"), 1),
        _layer("mlp.up_proj.weight", ("mlp", "up_proj"), 1),
        _layer("mlp.down_proj.weight", ("mlp", "down_proj"), 1),
    ]
    if not config.tie_word_embeddings:
        entries.append(Entry("lm_head.weight", ("lm_head",), 1))
    if config.attention_bias:
        entries += [_layer(f"self_attn.{p}_proj.bias", ("attn", f"{p}_bias"), flat=True) for p in "qkv"]
    if config.qk_norm:
        entries += [_layer(f"self_attn.{p}_norm.weight", ("attn", f"{p}_norm", "scale")) for p in "qk"]
    return entries


def _expand(config: ModelConfig) -> Iterable[tuple[str, tuple[str | int, ...], Entry]]:
    for entry in table(config):
        layers = range(config.num_layers) if "{i}" in entry.hf else [0]
        for i in layers:
            yield entry.name(i), entry.path(i), entry


# --------------------------------------------------------------------------- config.json


def config_from_hf(hf: dict[str, Any], source: str = "config.json", **overrides: Any) -> ModelConfig:
    """ModelConfig from a transformers config.json dict; unsupported features raise naming the key."""
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{source}: model_type '{model_type}' is not supported (known: {sorted(FAMILIES)})")
    _, bias, qk_norm = FAMILIES[model_type]
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act '{hf['hidden_act']}' is not supported (only silu)")
    if hf.get("use_sliding_window") or (model_type == "llama" and hf.get("sliding_window")):
        raise ValueError(f"{source}: use_sliding_window is not supported")
    if model_type == "llama" and hf.get("mlp_bias"):
        raise ValueError(f"{source}: mlp_bias is not supported")
    if model_type != "qwen2" and hf.get("attention_bias"):
        raise ValueError(f"{source}: attention_bias for {model_type} (also biases o_proj) is not supported")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    known = {f.name for f in dataclasses.fields(RopeScaling)} - {"type"}
    extra = sorted(k for k in rope if k not in known)
    if extra:
        raise ValueError(f"{source}: rope parameters {extra} are not supported")
    if rope_type in ("llama3", "yarn") and not rope.get("original_max_position_embeddings"):
        rope["original_max_position_embeddings"] = hf["max_position_embeddings"]
    heads = hf["num_attention_heads"]
    values = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, intermediate_size=hf["intermediate_size"],
        rope_theta=float(theta), rope_scaling=RopeScaling(type=rope_type, **rope),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6), tie_word_embeddings=hf.get("tie_word_embeddings", False),
        attention_bias=bool(hf.get("attention_bias", False)) if bias is None else bias, qk_norm=qk_norm,
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        initializer_range=hf.get("initializer_range", 0.02),
    )
    values.update(overrides)
    return ModelConfig(**values)


def config_to_hf(config: ModelConfig, **extra: Any) -> dict[str, Any]:
    """A transformers config.json dict for the family this config belongs to."""
    model_type = "qwen3" if config.qk_norm else "qwen2" if config.attention_bias else "llama"
    s = config.rope_scaling
    rope: dict[str, Any] = {"rope_type": s.type, "rope_theta": config.rope_theta}
    if s.type != "default":
        rope["factor"] = s.factor
    if s.type == "llama3":
        rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    if s.type == "yarn":
        rope.update(beta_fast=s.beta_fast, beta_slow=s.beta_slow, truncate=s.truncate,
                    original_max_position_embeddings=s.original_max_position_embeddings)
        if s.attention_factor is not None:
            rope["attention_factor"] = s.attention_factor
    hf = {
        "architectures": [FAMILIES[model_type][0]], "model_type": model_type, "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim, "intermediate_size": config.intermediate_size, "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps, "tie_word_embeddings": config.tie_word_embeddings,
        "max_position_embeddings": config.max_position_embeddings, "rope_parameters": rope,
        "initializer_range": config.initializer_range, "dtype": config.param_dtype,
    }
    if model_type != "qwen2":
        hf["attention_bias"] = False
    hf.update(extra)
    return hf


def load_config(path: str, **overrides: Any) -> ModelConfig:
    """ModelConfig of the HF model directory `path` (overrides: dtype, param_dtype, attention_impl, ...)."""
    file = os.path.join(path, "config.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: no config.json in the HF model directory")
    with open(file) as f:
        return config_from_hf(json.load(f), source=file, **overrides)


# --------------------------------------------------------------------------- safetensors


class SafetensorsFile:
    """A memory-mapped .safetensors file: tensors are read lazily, slice by slice."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        self._start = 8 + header_len
        self._map = np.memmap(path, dtype=np.uint8, mode="r")
        self.header = header

    def keys(self) -> list[str]:
        return list(self.header)

    def tensor(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{self.path}: tensor '{name}' has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        raw = self._map[self._start + begin:self._start + end]
        return raw.view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write numpy arrays (float32/float16/bfloat16) as one .safetensors file."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, array in tensors.items():
        size = array.nbytes
        header[name] = {"dtype": _ST_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).tobytes())


def _open_weights(path: str) -> dict[str, SafetensorsFile]:
    """Tensor name -> the file holding it (single file or sharded index)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {name: SafetensorsFile(os.path.join(path, name)) for name in sorted(set(weight_map.values()))}
        return {tensor: files[name] for tensor, name in weight_map.items()}
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
        raise FileNotFoundError(f"{path}: neither model.safetensors nor model.safetensors.index.json")
    file = SafetensorsFile(single)
    return {name: file for name in file.keys()}


# --------------------------------------------------------------------------- weights in


def load_weights(config: ModelConfig, get: Callable[[str], np.ndarray], names: Iterable[str], source: str,
                 mesh: jax.sharding.Mesh | None = None) -> CausalLM:
    """Build a CausalLM whose parameters come from `get(hf_name)`, each placed directly in its shards."""
    abstract = nnx.eval_shape(lambda: CausalLM(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    shardings = named_shardings(state, mesh) if mesh is not None else None
    flat = dict(nnx.to_flat_state(state))
    flat_shardings = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    expected = {name: (path, entry) for name, path, entry in _expand(config)}
    unknown = sorted(set(names) - set(expected))
    missing = sorted(set(expected) - set(names))
    if unknown or missing:
        raise ValueError(f"{source}: tensors do not match a {config_to_hf(config)['architectures'][0]} "
                         f"checkpoint; unexpected: {unknown[:20]}; missing: {missing[:20]}")
    dtype = config.weight_dtype
    for name, (path, entry) in expected.items():
        variable = flat[path]
        w = get(name)
        hf_shape = entry.hf_shape(variable.shape)
        if tuple(w.shape) != tuple(hf_shape):
            raise ValueError(f"{source}: tensor '{name}' has shape {list(w.shape)}, expected {list(hf_shape)}")
        value = entry.to_ours(w, variable.shape)
        if mesh is None:
            array = jnp.asarray(value, dtype)
        else:
            sharding = flat_shardings[path]
            array = jax.make_array_from_callback(
                variable.shape, sharding, lambda index, v=value: np.asarray(v[index], dtype))
        variable.set_value(array)
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def load_model(path: str, mesh: jax.sharding.Mesh | None = None, **overrides: Any) -> CausalLM:
    """A CausalLM with the weights of the HF directory `path` (config overrides e.g. dtype='bfloat16')."""
    config = load_config(path, **overrides)
    weights = _open_weights(path)
    model = load_weights(config, lambda name: weights[name].tensor(name), weights.keys(), path, mesh)
    logging.info("loaded %s (%d params) from %s", type(model).__name__, config.num_params(), path)
    return model


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: the HF model directory has no tokenizer.json")
    return tokenizers.Tokenizer.from_file(file)


def load_tokenizer_config(path: str) -> dict[str, Any]:
    """tokenizer_config.json (chat template, special tokens), or {} when the directory has none."""
    file = os.path.join(path, "tokenizer_config.json")
    if not os.path.exists(file):
        return {}
    with open(file) as f:
        return json.load(f)


# --------------------------------------------------------------------------- weights out


def _to_host(x: jax.Array) -> np.ndarray:
    """The whole array on this host (gathered from the other processes' shards on multi-host meshes)."""
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_pretrained(model: CausalLM, path: str, tokenizer: tokenizers.Tokenizer | None = None,
                    tokenizer_config: dict[str, Any] | None = None, max_shard_bytes: int = 2 << 30) -> None:
    """Write a transformers-loadable directory: config.json, safetensors (sharded when large), tokenizer.

    Tensors are gathered one shard file at a time, so the host holds at most `max_shard_bytes` of weights.
    Every process must call it (the gathers are collective); only process 0 writes.
    """
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(path, exist_ok=True)
    config: ModelConfig = model.config
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    entries = list(_expand(config))
    groups: list[list[tuple[str, tuple, Entry]]] = [[]]
    size = 0
    for item in entries:
        nbytes = flat[item[1]].size * config.weight_dtype.itemsize
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += nbytes
    weight_map = {}
    for n, group in enumerate(groups):
        file = "model.safetensors" if len(groups) == 1 else f"model-{n + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: np.ascontiguousarray(entry.to_hf(_to_host(flat[p].get_value()))) for name, p, entry in group}
        if writer:
            write_safetensors(os.path.join(path, file), tensors)
        weight_map.update({name: file for name in tensors})
    if not writer:
        return
    if len(groups) > 1:
        total = sum(flat[p].size for _, p, _ in entries) * config.weight_dtype.itemsize
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    extra = {}
    if tokenizer is not None:
        tokenizer.save(os.path.join(path, "tokenizer.json"))
        tok_config = dict(tokenizer_config or {})
        tok_config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump(tok_config, f, indent=2)
        for key in ("eos_token", "pad_token", "bos_token"):
            token = tok_config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if token is not None and tokenizer.token_to_id(token) is not None:
                extra[f"{key}_id"] = tokenizer.token_to_id(token)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_to_hf(config, **extra), f, indent=2)
    logging.info("exported %s to %s", config_to_hf(config)["architectures"][0], path)
