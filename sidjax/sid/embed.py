"""Item text -> vectors, the input of the quantizers.

Three ways, chosen by `config.sids.embed.method`:
- `tfidf_lsa` (default): needs no weights and runs anywhere in seconds. TF-IDF
  over title, brand, categories and description, reduced by truncated SVD
  (latent semantic analysis). Items that share words (the same product line,
  brand, use) land close together, which is the structure a residual
  quantizer turns into shared SID prefixes. Built on numpy + scipy.sparse
  (scipy comes with jax), with a seeded randomized SVD so it is deterministic.
- `precomputed`: the user's own `.npy` [num_items, D], validated.
- `lm_mean_pool`: what the papers do (with Qwen): mean of a causal LM's last
  hidden states over the tokens of `item_text` (title + description), in
  `sidjax.model.pool`.
"""
from __future__ import annotations

import collections
import os
import re
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from sidjax.utils.catalog import Item
from sidjax.utils.errors import DataError

_WORD = re.compile(r"[a-z0-9]+")
# Function words carry no product semantics; a short fixed list keeps the result independent of any download.
_STOP = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were will with "
    "you your our we can not no all any more most other some such than too very".split()
)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOP]


def item_terms(item: Item, title_weight: float) -> collections.Counter:
    """Weighted term counts of one item: words of every field, plus whole brand / category tokens."""
    counts: collections.Counter = collections.Counter()
    for w in _words(item.title):
        counts[w] += title_weight
    for w in _words(item.description) + _words(item.categories) + _words(item.brand):
        counts[w] += 1.0
    if item.brand.strip():
        counts["brand=" + item.brand.strip().lower()] += title_weight
    for category in filter(None, (c.strip().lower() for c in re.split(r"[,|>\n]", item.categories))):
        counts["category=" + category] += 1.0
    return counts


def tfidf_matrix(items: Sequence[Item], *, min_df: int, max_df: float, title_weight: float) -> sp.csr_matrix:
    """Rows: items; columns: terms kept by document frequency; sublinear TF x smooth IDF, rows L2-normalised."""
    per_item = [item_terms(item, title_weight) for item in items]
    df = collections.Counter(term for counts in per_item for term in counts)
    limit = max_df * len(items)
    vocab = {t: i for i, t in enumerate(sorted(t for t, n in df.items() if min_df <= n <= limit))}
    if not vocab:
        raise ValueError(
            f"no term occurs in at least min_df={min_df} and at most max_df={max_df} "
            f"of the {len(items)} items"
        )
    rows, cols, vals = [], [], []
    for row, counts in enumerate(per_item):
        for term, n in counts.items():
            col = vocab.get(term)
            if col is not None:
                rows.append(row)
                cols.append(col)
                vals.append(1.0 + np.log(n))
    x = sp.csr_matrix((vals, (rows, cols)), shape=(len(items), len(vocab)), dtype=np.float64)
    idf = np.log((1.0 + len(items)) / (1.0 + np.array([df[t] for t in sorted(vocab)], dtype=np.float64))) + 1.0
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).reshape(-1)
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x)


def randomized_svd(x: sp.spmatrix, rank: int, *, seed: int, oversample: int = 10, power_iters: int = 4):
    """Top-`rank` SVD (U, S, Vt) by random range finding with power iterations (Halko et al., 2011)."""
    rng = np.random.default_rng(seed)
    q = x @ rng.standard_normal((x.shape[1], rank + oversample))
    q, _ = np.linalg.qr(q)
    for _ in range(power_iters):
        q, _ = np.linalg.qr(x.T @ q)
        q, _ = np.linalg.qr(x @ q)
    u_small, s, vt = np.linalg.svd(np.asarray((x.T @ q).T), full_matrices=False)
    u = (q @ u_small)[:, :rank]
    s, vt = s[:rank], vt[:rank]
    signs = np.sign(vt[np.arange(rank), np.argmax(np.abs(vt), axis=1)])  # fix the sign ambiguity
    return u * signs, s, vt * signs[:, None]


def tfidf_lsa(
    items: Sequence[Item], *, dim: int, min_df: int, max_df: float, title_weight: float, seed: int
) -> np.ndarray:
    """float32 [num_items, dim] LSA vectors (U * S), rows L2-normalised so distances compare directions."""
    x = tfidf_matrix(items, min_df=min_df, max_df=max_df, title_weight=title_weight)
    if dim >= min(x.shape):
        raise ValueError(
            f"dim={dim} must be smaller than min(items, terms) = min{x.shape} for the LSA embedding"
        )
    u, s, _ = randomized_svd(x, dim, seed=seed)
    z = u * s
    return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_precomputed(path: str | os.PathLike, num_items: int) -> np.ndarray:
    """A user's `.npy` [num_items, D] of finite numbers, as float32."""
    if not os.path.exists(path):
        raise DataError(path, "embedding file not found")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(path, f"not a .npy array: {e}") from None
    if x.ndim != 2:
        raise DataError(path, f"expected a 2-d array [num_items={num_items}, D], got shape {x.shape}")
    if x.shape[0] != num_items:
        raise DataError(path, f"has {x.shape[0]} rows but the dataset has {num_items} items")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(path, f"expected numbers, got dtype {x.dtype}")
    bad = np.nonzero(~np.isfinite(x).all(axis=1))[0]
    if bad.size:
        raise DataError(path, f"{bad.size} rows hold NaN or inf, e.g. item {int(bad[0])}")
    return x.astype(np.float32)


def item_text(item: Item) -> str:
    """What the papers embed: title and description."""
    return f"{item.title}\n{item.description}".strip()
