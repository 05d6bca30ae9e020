"""Semantic IDs as tokens, files and a trie.

One place for: the token strings `<a_X><b_Y><c_Z>` (letter = level), the
papers' `index.json` <-> the int table `sids[num_items, L]`, and `SidTrie`,
the per-level prefix tables that constrained decoding indexes with array
arithmetic (no Python per beam): `codes[l][node]` lists the allowed codes
after the prefix `node`, `next_node[l][node]` where each leads. Also the
collision policies (Sinkhorn re-assignment of the last level, or an appended
disambiguation level) and the SID statistics every report uses.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import string
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sidjax.sid.index_file import read_index, write_index
from sidjax.utils.errors import DataError

LETTERS = string.ascii_lowercase
_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """`<a_12>` for code 12 at level 0."""
    if not 0 <= level < len(LETTERS):
        raise ValueError(f"SID level {level} out of range (at most {len(LETTERS)} levels)")
    return f"<{LETTERS[level]}_{int(code)}>"


def sid_tokens(sid: Sequence[int]) -> list[str]:
    return [sid_token(level, code) for level, code in enumerate(sid)]


def sid_string(sid: Sequence[int]) -> str:
    """The concatenated form the papers' prompts and info files use: `<a_1><b_2><c_3>`."""
    return "".join(sid_tokens(sid))


def vocabulary(level_sizes: Sequence[int]) -> list[list[str]]:
    """Every SID token, one list per level in code order: the blocks a tokenizer adds contiguously."""
    return [[sid_token(level, code) for code in range(size)] for level, size in enumerate(level_sizes)]


def parse_sid_tokens(tokens: Sequence[str], where: str = "SID") -> list[int]:
    """`["<a_1>", "<b_2>"]` -> `[1, 2]`; the letters must be a, b, c, ... in order."""
    codes = []
    for level, token in enumerate(tokens):
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ValueError(f"{where}: '{token}' is not a SID token like '<a_12>'")
        if match.group(1) != LETTERS[level]:
            raise ValueError(f"{where}: token {level} is '{token}', expected level letter '{LETTERS[level]}'")
        codes.append(int(match.group(2)))
    return codes


def parse_sid_string(text: str, where: str = "SID") -> list[int]:
    """`"<a_1><b_2><c_3>"` -> `[1, 2, 3]` (the whole string must be SID tokens)."""
    tokens = _TOKEN.findall(text)
    if "".join(f"<{letter}_{code}>" for letter, code in tokens) != text or not tokens:
        raise ValueError(f"{where}: '{text}' is not a sequence of SID tokens like '<a_1><b_2><c_3>'")
    return parse_sid_tokens([f"<{letter}_{code}>" for letter, code in tokens], where)


def index_to_sids(index: Mapping[int, Sequence[str]], num_items: int, where: str = "index") -> np.ndarray:
    """The papers' {item id: [tokens]} -> int32 [num_items, L]; every item 0..num_items-1 must be present."""
    missing = sorted(set(range(num_items)) - set(index))
    if missing:
        raise DataError(
            where, f"{len(missing)} item ids have no SID, e.g. {missing[:5]} (items are 0..{num_items - 1})"
        )
    extra = sorted(set(index) - set(range(num_items)))
    if extra:
        raise DataError(where, f"item ids {extra[:5]} are not items of the dataset (items are 0..{num_items - 1})")
    rows = []
    for item in range(num_items):
        try:
            rows.append(parse_sid_tokens(index[item], where=f"item {item}"))
        except ValueError as e:
            raise DataError(where, str(e)) from None
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise DataError(where, f"SIDs have different numbers of levels {sorted(lengths)}")
    return np.asarray(rows, dtype=np.int32)


def sids_to_index(sids: np.ndarray) -> dict[int, list[str]]:
    return {item: sid_tokens(row) for item, row in enumerate(np.asarray(sids).tolist())}


def read_sids(path: str | os.PathLike, num_items: int) -> np.ndarray:
    """An `index.json` file -> int32 [num_items, L]."""
    return index_to_sids(read_index(path), num_items, where=os.fspath(path))


def write_sids(path: str | os.PathLike, sids: np.ndarray) -> None:
    """int32 [num_items, L] -> the papers' `index.json`."""
    write_index(path, sids_to_index(sids))


def collision_groups(sids: np.ndarray) -> list[np.ndarray]:
    """Item ids that share a SID, one array per shared SID (ascending), in SID order."""
    _, inverse, counts = np.unique(np.asarray(sids), axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [order[s : s + c] for s, c in zip(starts, counts) if c > 1]


def sid_statistics(sids: np.ndarray, level_sizes: Sequence[int]) -> dict[str, float | int | list]:
    """Per-level code usage and perplexity, and how many items share a SID."""
    sids = np.asarray(sids)
    usage, perplexity = [], []
    for level, size in enumerate(level_sizes):
        p = np.bincount(sids[:, level], minlength=size) / len(sids)
        usage.append(round(float((p > 0).sum() / size), 4))
        nz = p[p > 0]
        perplexity.append(round(float(np.exp(-(nz * np.log(nz)).sum())), 3))
    groups = collision_groups(sids)
    shared = int(sum(len(g) for g in groups))
    return {
        "items": int(len(sids)),
        "levels": int(sids.shape[1]),
        "level_sizes": [int(s) for s in level_sizes],
        "usage": usage,
        "perplexity": perplexity,
        "unique_sids": int(len(np.unique(sids, axis=0))),
        "collision_groups": len(groups),
        "items_sharing_a_sid": shared,
        "collision_rate": round(shared / len(sids), 6),
        "max_items_per_sid": int(max((len(g) for g in groups), default=1)),
    }


@functools.partial(jax.jit, static_argnames=("iters",))
def _sinkhorn_plans(
    residuals: jax.Array, codebook: jax.Array, rows: jax.Array, cols: jax.Array, epsilon: float, iters: int
) -> jax.Array:
    """Log transport plans [P, R, K] of P problems at once: the rows' (`rows` bool [P, R]) squared distances
    from `residuals` [P, R, D] to the allowed codes (`cols` bool [P, K]) of `codebook` [K, D], rescaled to
    [-1, 1] per problem; uniform mass over valid rows and over valid columns; invalid entries stay -inf."""
    valid = rows[:, :, None] & cols[:, None, :]
    dist = jnp.sum(residuals**2, -1)[..., None] - 2 * residuals @ codebook.T + jnp.sum(codebook**2, -1)
    top = jnp.max(jnp.where(valid, dist, -jnp.inf), axis=(1, 2), keepdims=True)
    low = jnp.min(jnp.where(valid, dist, jnp.inf), axis=(1, 2), keepdims=True)
    middle = (top + low) / 2
    log_k = jnp.where(valid, -(dist - middle) / (top - middle + 1e-5) / epsilon, -jnp.inf)
    log_a = jnp.where(rows, -jnp.log(jnp.maximum(rows.sum(1, keepdims=True), 1)), -jnp.inf)
    log_b = jnp.where(cols, -jnp.log(jnp.maximum(cols.sum(1, keepdims=True), 1)), -jnp.inf)

    def step(_, carry):
        _, log_v = carry
        log_u = jnp.where(rows, log_a - jax.nn.logsumexp(log_k + log_v[:, None, :], axis=2), -jnp.inf)
        log_v = jnp.where(cols, log_b - jax.nn.logsumexp(log_k + log_u[:, :, None], axis=1), -jnp.inf)
        return log_u, log_v

    log_u, log_v = jax.lax.fori_loop(0, iters, step, (jnp.zeros(rows.shape), jnp.zeros(cols.shape)))
    return log_k + log_u[:, :, None] + log_v[:, None, :]


def _round_plan(log_plan: np.ndarray) -> np.ndarray:
    """Each row's column from a transport plan [g, K]: largest entries first, one row per column while
    columns last (rows left over when there are fewer columns than rows take their argmax).

    A plain per-row argmax gives identical rows (items with identical
    embeddings) the same code again; greedy rounding keeps them distinct.
    """
    g, k = log_plan.shape
    choice = np.full(g, -1)
    used = ~np.isfinite(log_plan).any(axis=0)  # columns outside the problem
    for flat in np.argsort(-log_plan, axis=None, kind="stable"):
        row, col = divmod(int(flat), k)
        if choice[row] < 0 and not used[col]:
            choice[row], used[col] = col, True
            if (choice >= 0).all() or used.all():
                break
    rest = choice < 0
    choice[rest] = np.argmax(log_plan[rest], axis=1)
    return choice


def sinkhorn_reassign(
    sids: np.ndarray, residuals: np.ndarray, codebook: np.ndarray, *, epsilon: float, iters: int
) -> np.ndarray:
    """The papers' collision fix: re-pick the LAST level's codes of colliding items with Sinkhorn.

    Per prefix, the items that share a full SID with another item are
    re-assigned jointly to the last-level codes no other item of that prefix
    holds: the distances of their last-level residuals [g, D] to those codes
    are rescaled to [-1, 1] and turned into a balanced transport plan (every
    code the same mass), which pushes the items towards different codes. The
    plan is rounded greedily to distinct codes. The papers instead take a
    per-row argmax and repeat up to 20 times, which leaves items with
    identical embeddings colliding forever; here what still collides (a
    prefix with more items than codes) is left for the report.
    """
    sids = np.array(sids, dtype=np.int32, copy=True)
    groups = collision_groups(sids)
    if not groups:
        return sids
    k = len(codebook)
    colliding = np.concatenate(groups)
    prefixes, prefix_of = np.unique(sids[:, :-1], axis=0, return_inverse=True)
    prefix_of = prefix_of.reshape(-1)
    held = np.zeros((len(prefixes), k), dtype=bool)  # codes held by items that do not collide
    keep = np.setdiff1d(np.arange(len(sids)), colliding)
    held[prefix_of[keep], sids[keep, -1]] = True
    problems = np.unique(prefix_of[colliding])
    members = [colliding[prefix_of[colliding] == p] for p in problems]
    width = max(len(m) for m in members)
    index = np.zeros((len(problems), width), dtype=np.int64)
    rows = np.zeros((len(problems), width), dtype=bool)
    for i, m in enumerate(members):
        index[i, : len(m)], rows[i, : len(m)] = m, True
    cols = ~held[problems]
    rows_residuals = jnp.asarray(residuals, jnp.float32)[index]
    plans = np.asarray(_sinkhorn_plans(rows_residuals, jnp.asarray(codebook, jnp.float32), rows, cols, epsilon, iters))
    for i, m in enumerate(members):
        if cols[i].any():
            sids[m, -1] = _round_plan(plans[i, : len(m)])
    return sids


def append_disambiguation_level(sids: np.ndarray) -> np.ndarray:
    """Add one level: an item's rank among the items sharing its SID (0 for unique ones), so all SIDs differ."""
    sids = np.asarray(sids, dtype=np.int32)
    extra = np.zeros(len(sids), dtype=np.int32)
    for group in collision_groups(sids):
        extra[group] = np.arange(len(group), dtype=np.int32)
    return np.concatenate([sids, extra[:, None]], axis=1)


def prefix_domains(sids: np.ndarray, item_domain: np.ndarray) -> np.ndarray:
    """`sids` [N, L] with each item's domain index as a new first level: [N, L + 1]."""
    item_domain = np.asarray(item_domain)
    if item_domain.shape != (sids.shape[0],):
        raise ValueError(f"item_domain {item_domain.shape} must have one entry per SID row ({sids.shape[0]})")
    return np.concatenate([item_domain[:, None].astype(sids.dtype), sids], axis=1)


@dataclasses.dataclass(frozen=True)
class SidTrie:
    """Prefix tables of a SID table `sids[num_items, L]`.

    Node ids at level l number the distinct prefixes of length l in lexicographic
    order (level 0 has the root only). For node n at level l, `codes[l][n]` are
    the codes that extend it (ascending, -1 padded to the static max branching
    B_l) and `next_node[l][n]` the node they lead to at level l+1; at the last
    level that is a leaf: the row of `leaf_sids` (the distinct SIDs, sorted).
    Several items can share a leaf (SID collisions): `leaf_items[leaf]` lists
    them (-1 padded), `item_leaf[item]` is the inverse.
    """

    codes: tuple[np.ndarray, ...]  # per level int32 [n_l, B_l]
    next_node: tuple[np.ndarray, ...]  # per level int32 [n_l, B_l]
    leaf_sids: np.ndarray  # int32 [n_leaves, L]
    leaf_items: np.ndarray  # int32 [n_leaves, max items per SID]
    item_leaf: np.ndarray  # int32 [num_items]
    level_sizes: tuple[int, ...]  # codes per level (token block sizes)

    @property
    def num_levels(self) -> int:
        return len(self.codes)

    @property
    def num_leaves(self) -> int:
        return int(self.leaf_sids.shape[0])

    @property
    def branching(self) -> tuple[int, ...]:
        return tuple(int(c.shape[1]) for c in self.codes)

    @classmethod
    def build(cls, sids: np.ndarray, level_sizes: Sequence[int] | None = None,
              items: np.ndarray | None = None) -> "SidTrie":
        """Tables for `sids` (int [num_items, L], codes >= 0); `level_sizes` defaults to max code + 1.

        `items`: only these rows enter the trie (one domain's catalogue); the others get `item_leaf` -1.
        """
        sids = np.asarray(sids)
        if sids.ndim != 2 or sids.shape[0] == 0 or sids.shape[1] == 0:
            raise ValueError(f"sids must be a non-empty [num_items, L] array, got shape {sids.shape}")
        if sids.min() < 0:
            raise ValueError("sids must be >= 0")
        num_levels = sids.shape[1]
        top = sids.max(axis=0) + 1
        sizes = tuple(int(s) for s in (top if level_sizes is None else level_sizes))
        if len(sizes) != num_levels or any(t > s for t, s in zip(top, sizes)):
            raise ValueError(f"level_sizes {sizes} do not cover the codes (max code + 1 per level: {top.tolist()})")
        rows = np.arange(len(sids)) if items is None else np.unique(np.asarray(items, np.int64))
        if rows.size == 0 or rows[0] < 0 or rows[-1] >= len(sids):
            raise ValueError(f"items must be a non-empty subset of 0..{len(sids) - 1}")
        leaf_sids, row_leaf = np.unique(sids[rows], axis=0, return_inverse=True)
        row_leaf = row_leaf.reshape(-1)
        # node_of[l][leaf] = id of the leaf's length-l prefix; leaves are sorted, so prefixes are too.
        node_of = []
        for length in range(num_levels + 1):
            changed = np.any(leaf_sids[1:, :length] != leaf_sids[:-1, :length], axis=1)
            node_of.append(np.concatenate([[0], np.cumsum(changed)]))
        codes, next_node = [], []
        for level in range(num_levels):
            parent, child = node_of[level], node_of[level + 1]
            first = np.concatenate([[True], child[1:] != child[:-1]])  # one row per distinct child
            parent, child, code = parent[first], child[first], leaf_sids[first, level]
            start = np.searchsorted(parent, np.arange(parent[-1] + 1))
            slot = np.arange(len(child)) - start[parent]
            width = int(slot.max()) + 1
            table = np.full((parent[-1] + 1, width), -1, dtype=np.int32)
            nxt = np.full_like(table, -1)
            table[parent, slot] = code
            nxt[parent, slot] = child
            codes.append(table)
            next_node.append(nxt)
        counts = np.bincount(row_leaf, minlength=len(leaf_sids))
        order = np.argsort(row_leaf, kind="stable")
        slot = np.arange(len(order)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[row_leaf[order]]
        leaf_items = np.full((len(leaf_sids), int(counts.max())), -1, dtype=np.int32)
        leaf_items[row_leaf[order], slot] = rows[order]
        item_leaf = np.full(len(sids), -1, np.int64)
        item_leaf[rows] = row_leaf
        return cls(
            codes=tuple(codes),
            next_node=tuple(next_node),
            leaf_sids=leaf_sids.astype(np.int32),
            leaf_items=leaf_items,
            item_leaf=item_leaf.astype(np.int32),
            level_sizes=sizes,
        )

    def dense_masks(self, max_entries: int = 1 << 24) -> tuple[np.ndarray, ...]:
        """Per level bool [n_l, level_sizes[l]]: allowed codes after each prefix node (while small)."""
        masks = []
        for level, (table, size) in enumerate(zip(self.codes, self.level_sizes)):
            if table.shape[0] * size > max_entries:
                raise ValueError(
                    f"dense mask of level {level} would have {table.shape[0]} x {size} entries "
                    f"(> max_entries={max_entries}); use the sparse `codes` tables"
                )
            mask = np.zeros((table.shape[0], size), dtype=bool)
            rows, cols = np.nonzero(table >= 0)
            mask[rows, table[rows, cols]] = True
            masks.append(mask)
        return tuple(masks)

    def node_of_prefix(self, prefix: Sequence[int]) -> int:
        """Node id of a prefix (length < L), or -1 when no SID starts with it."""
        node = 0
        for level, code in enumerate(prefix):
            hit = np.nonzero(self.codes[level][node] == code)[0]
            if hit.size == 0:
                return -1
            node = int(self.next_node[level][node, hit[0]])
        return node


def leaf_ids(codes: Sequence, next_node: Sequence, sids):
    """Leaf id of each SID row (`sids` int [..., L]), -1 where it is not in the trie.

    Written with jax.numpy so it runs in-graph (metrics: a hit is SID equality,
    i.e. equal leaf ids); it accepts the trie's numpy tables as they are.
    """
    sids = jnp.asarray(sids)
    node = jnp.zeros(sids.shape[:-1], dtype=jnp.int32)
    found = jnp.ones(sids.shape[:-1], dtype=bool)
    for level in range(sids.shape[-1]):
        row_codes = jnp.asarray(codes[level])[node]  # [..., B_l]
        match = row_codes == sids[..., level, None]
        found = found & match.any(axis=-1)
        slot = jnp.argmax(match, axis=-1)
        node = jnp.take_along_axis(jnp.asarray(next_node[level])[node], slot[..., None], axis=-1)[..., 0]
        node = jnp.where(found, node, 0)
    return jnp.where(found, node, -1)
