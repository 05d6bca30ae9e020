"""SID tokens in the vocabulary: one contiguous id block per level, embeddings resized to fit.

`level_offsets[l]` is the first id of level l's block, so the token of code c at level l is
`level_offsets[l] + c` (the layout constrained decoding and rewards rely on). New embedding
rows (and untied output columns) start at the mean of the pretrained ones (with noise, or, for
SID tokens, from the pretrained rows of their items' titles: `ItemTitles`), and the table is
padded to a multiple of 128 so it shards and tiles well. With a frozen LM only those new
rows train: `new_rows_mask` gives the update mask.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx

from sidjax.model.transformer import CausalLM
from sidjax.sid.codes import sid_string, vocabulary


class VocabularyError(ValueError):
    """The tokenizer cannot represent the SIDs as one token per code."""


def add_sid_tokens(tokenizer: tokenizers.Tokenizer, level_sizes: Sequence[int]) -> np.ndarray:
    """Add every SID token (in place) as contiguous blocks, one per level; returns level_offsets int32 [L].

    A tokenizer that already holds exactly these blocks (e.g. reloaded from a checkpoint) is left
    as is; one holding only some of them is an error.
    """
    blocks = vocabulary(level_sizes)
    present = [t for block in blocks for t in block if tokenizer.token_to_id(t) is not None]
    if present:
        offsets = level_offsets(tokenizer, level_sizes)
    else:
        offsets = []
        for block in blocks:
            offsets.append(tokenizer.get_vocab_size(with_added_tokens=True))
            added = tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False) for t in block])
            if added != len(block):
                raise VocabularyError(f"the tokenizer added {added} of {len(block)} tokens of block '{block[0]}'")
        offsets = np.asarray(offsets, np.int32)
    check_sid_tokens(tokenizer, offsets, level_sizes)
    return offsets


def level_offsets(tokenizer: tokenizers.Tokenizer, level_sizes: Sequence[int]) -> np.ndarray:
    """The level_offsets of a tokenizer that already holds the SID blocks; raises if a block is broken."""
    offsets = []
    for level, block in enumerate(vocabulary(level_sizes)):
        ids = [tokenizer.token_to_id(t) for t in block]
        missing = [t for t, i in zip(block, ids) if i is None]
        if missing:
            raise VocabularyError(f"SID tokens missing from the tokenizer: {missing[:5]} ({len(missing)} in all)")
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise VocabularyError(f"SID tokens of level {level} do not occupy one contiguous id block")
        offsets.append(ids[0])
    return np.asarray(offsets, np.int32)


def check_sid_tokens(tokenizer: tokenizers.Tokenizer, offsets: Sequence[int], level_sizes: Sequence[int],
                     sids: np.ndarray | None = None) -> None:
    """Fail loudly unless every SID token encodes to exactly its one id, alone and inside a SID string.

    With `sids` (int [num_items, L]), every item's full SID string is checked too.
    """
    bad = []
    for level, block in enumerate(vocabulary(level_sizes)):
        for code, token in enumerate(block):
            ids = tokenizer.encode(token, add_special_tokens=False).ids
            if ids != [offsets[level] + code]:
                bad.append(f"{token} -> {ids}")
    if sids is not None:
        expected = np.asarray(offsets)[None, :] + np.asarray(sids)
        for row, want in zip(np.asarray(sids), expected):
            text = sid_string(row)
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            if ids != want.tolist():
                bad.append(f"{text} -> {ids}")
    if bad:
        raise VocabularyError(f"{len(bad)} SID tokens/strings do not encode to exactly their own ids, "
                              f"e.g. {bad[:5]}")


def padded_size(num_tokens: int, multiple: int) -> int:
    return -(-num_tokens // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class ItemTitles:
    """The items whose titles SID tokens start from (`resize_vocab`): their title tokens and SIDs."""

    tokens: Sequence[np.ndarray]  # per item: its title's ids in the pretrained vocabulary
    sids: np.ndarray  # int [num_items, L]: each item's codes
    level_offsets: np.ndarray  # int [L]: the row of code 0 of each level

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.sids):
            raise ValueError(f"ItemTitles: titles of {len(self.tokens)} items but SIDs of {len(self.sids)}")


def title_rows(table: np.ndarray, titles: ItemTitles) -> tuple[np.ndarray, np.ndarray]:
    """(rows int [R], values f32 [R, E]): a starting row for every SID token that some item carries.

    `table` [V, E] holds the pretrained rows. An item's vector is the mean of its title tokens' rows; a
    code's row is the mean of the vectors of the items with that code at that level. What tells codes
    apart is where that mean lies against the mean of all items' vectors (plain means share one
    direction: on SmolLM2 their cosine about the vocabulary's centre was .98-.995, nearly `mean` init's
    identical rows), so the row is the pretrained rows' centre plus that difference, scaled to the
    pretrained rows' mean distance from their centre. A SID token then starts out leaning towards the
    words that set its items' titles apart.
    """
    table = np.asarray(table, np.float32)
    center = table.mean(0)
    spread = float(np.linalg.norm(table - center, axis=1).mean())
    vectors = np.zeros((len(titles.tokens), table.shape[1]), np.float32)
    named = np.zeros(len(titles.tokens), bool)
    for item, ids in enumerate(titles.tokens):
        ids = np.asarray(ids, np.int64)
        ids = ids[ids < table.shape[0]]
        if len(ids):
            vectors[item], named[item] = table[ids].mean(0), True
    titles_center = vectors[named].mean(0)
    rows, values = [], []
    for level, offset in enumerate(np.asarray(titles.level_offsets)):
        codes = np.asarray(titles.sids)[named, level]
        counts = np.bincount(codes)
        sums = np.zeros((len(counts), table.shape[1]), np.float32)
        np.add.at(sums, codes, vectors[named])
        used = np.flatnonzero(counts)
        away = sums[used] / counts[used, None] - titles_center
        rows.append(offset + used)
        values.append(center + away * (spread / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-12)))
    return np.concatenate(rows), np.concatenate(values)


def resize_vocab(model: CausalLM, num_tokens: int, first_new_row: int, multiple: int = 128,
                 sampled: bool = False, seed: int = 0, titles: ItemTitles | None = None) -> CausalLM:
    """A copy of `model` with `padded_size(num_tokens, multiple)` vocabulary rows.

    Rows >= `first_new_row` (tokens the pretrained model never learned, e.g. the added SID
    tokens and padding) start from the rows before it, in the embedding and in an untied output
    layer alike: each is their mean, plus, when `sampled`, Gaussian noise with their per-dimension
    standard deviation (seeded by `seed`), so that the new tokens are told apart from the first step:
    identical rows give every history of new tokens the same input. With `titles`, every SID token
    that an item carries starts from its items' titles instead (`title_rows`).
    """
    config = model.config
    if not 0 < first_new_row <= min(num_tokens, config.vocab_size):
        raise ValueError(f"first_new_row {first_new_row} must be in (0, min({num_tokens}, {config.vocab_size})]")
    size = max(padded_size(num_tokens, multiple), padded_size(first_new_row, multiple))
    new_config = config.replace(vocab_size=size)
    abstract = nnx.eval_shape(lambda: CausalLM(new_config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    old = dict(nnx.to_flat_state(nnx.state(model)))
    flat = dict(nnx.to_flat_state(state))
    keys = dict(zip((("embed",), ("lm_head",)), jax.random.split(jax.random.key(seed))))
    for path, variable in flat.items():
        value = old[path].get_value()
        if path in keys:
            axis = 0 if path == ("embed",) else 1
            value = _resize_rows(value, axis, first_new_row, size, keys[path] if sampled else None)
            if titles is not None:
                rows, values = title_rows(np.asarray(jnp.moveaxis(value, axis, 0)[:first_new_row]), titles)
                value = jnp.moveaxis(jnp.moveaxis(value, axis, 0).at[rows].set(values.astype(value.dtype)), 0, axis)
        variable.set_value(value)
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _resize_rows(table: jax.Array, axis: int, keep: int, size: int, noise_key: jax.Array | None) -> jax.Array:
    """`table` grown to `size` rows along `axis`: the mean of the first `keep`, plus noise with their spread
    when `noise_key` is given."""
    kept = jax.lax.slice_in_dim(table, 0, keep, axis=axis).astype(jnp.float32)
    shape = list(table.shape)
    shape[axis] = size - keep
    new = jnp.broadcast_to(jnp.mean(kept, axis=axis, keepdims=True), shape)
    if noise_key is not None:
        new = new + jax.random.normal(noise_key, shape) * jnp.std(kept, axis=axis, keepdims=True)
    return jnp.concatenate([kept, new], axis=axis).astype(table.dtype)


def new_rows_mask(model: CausalLM, first_new_row: int) -> Any:
    """An update mask shaped like `nnx.state(model, nnx.Param)`: 1 on vocabulary rows >= first_new_row, else 0.

    Multiply the optimizer's *updates* by it (not only the gradients), so weight decay and
    momentum cannot move the frozen pretrained weights either.
    """
    params = nnx.state(model, nnx.Param)
    rows = jnp.arange(model.config.vocab_size) >= first_new_row

    def mask(path: tuple, variable: nnx.Variable) -> nnx.Variable:
        if path == ("embed",):
            return variable.replace(rows[:, None].astype(variable.dtype))
        if path == ("lm_head",):
            return variable.replace(rows[None, :].astype(variable.dtype))
        return variable.replace(jnp.zeros((), variable.dtype))

    return nnx.map_state(mask, params)
