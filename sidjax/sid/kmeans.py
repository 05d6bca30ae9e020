"""Jitted k-means (k-means++ or random init, optionally size-balanced) and RQ-KMeans.

k-means initialises the RQ-VAE codebooks; RQ-KMeans (k-means on the residual,
level after level) is a training-free way to get SIDs. Balanced assignment
caps every cluster at ceil(N / k) items, which spreads items over the codes
and so lowers SID collisions.

Traced under a mesh (`jax.set_mesh`), k-means splits the rows of x over the
mesh's batch axes (data, fsdp): each device assigns its rows, and the centre
sums / counts are all-reduced by GSPMD. The centroids are tiny and replicated.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sidjax.parallel.rules import constrain, logical_spec

INITS = ("kmeans++", "random")
_ROW_AXES = logical_spec(("activation_batch",))[0]  # the mesh axes rows are split over (data, fsdp)


def row_shards(mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None) -> int:
    """How many ways `mesh` (default: the mesh being traced under; 1 without one) splits rows."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if mesh.empty:
        return 1
    axes = (_ROW_AXES,) if isinstance(_ROW_AXES, str) else tuple(_ROW_AXES or ())
    return math.prod(mesh.shape[axis] for axis in axes)


def split_rows(x: jax.Array, axis: int = 0) -> jax.Array:
    """Split dimension `axis` (a multiple of `row_shards()`) over the batch axes of the mesh being traced under.

    A no-op without a mesh. Callers pad to a multiple first: letting XLA pad uneven
    shards itself gave wrong k-means centres (jax 0.10, 37 rows over 4 shards).
    """
    names: list[str | None] = [None] * x.ndim
    names[axis] = "activation_batch"
    return constrain(x, names)


def sq_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[N, D] x [K, D] -> squared Euclidean distances [N, K] (one matmul)."""
    cross = x @ centroids.T
    return jnp.maximum(
        jnp.sum(x * x, axis=1, keepdims=True) - 2.0 * cross + jnp.sum(centroids * centroids, axis=1)[None, :], 0.0
    )


class _Rows(NamedTuple):
    """The data zero-padded to a multiple of the row shards and split over them; only the first n rows are real."""

    x: jax.Array  # [n + pad, D]
    n: int

    @property
    def valid(self) -> jax.Array:
        return jnp.arange(self.x.shape[0]) < self.n


def _split_padded(x: jax.Array) -> _Rows:
    pad = -x.shape[0] % row_shards()
    return _Rows(split_rows(jnp.pad(x, ((0, pad), (0, 0)))), x.shape[0])


def _init_random(rows: _Rows, k: int, key: jax.Array) -> jax.Array:
    idx = jax.random.choice(key, rows.n, (k,), replace=rows.n < k)
    return rows.x[idx]


def _init_plus_plus(rows: _Rows, k: int, key: jax.Array) -> jax.Array:
    """k-means++: each next centre sampled with probability proportional to its squared distance.

    The sampling noise is drawn for the n real rows only, so padding does not change the picks.
    """
    x, n, valid = rows.x, rows.n, rows.valid
    key, first = jax.random.split(key)
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[jax.random.randint(first, (), 0, n)])
    d2 = jnp.where(valid, jnp.sum((x - centroids[0]) ** 2, axis=1), 0.0)

    def body(i, carry):
        centroids, d2 = carry
        # All points already chosen (fewer distinct points than k): fall back to uniform sampling.
        logits = jnp.where(valid, jnp.where(d2.sum() > 0, jnp.log(d2), 0.0), -jnp.inf)
        noise = jnp.pad(jax.random.gumbel(jax.random.fold_in(key, i), (n,)), (0, x.shape[0] - n))
        pick = jnp.argmax(noise + logits)  # = jax.random.categorical over the real rows
        centroids = centroids.at[i].set(x[pick])
        return centroids, jnp.minimum(d2, jnp.where(valid, jnp.sum((x - x[pick]) ** 2, axis=1), 0.0))

    centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, d2))
    return centroids


def balanced_assign(dist: jax.Array, capacity: int, valid: jax.Array | None = None) -> jax.Array:
    """Assign each row to its nearest centre that still has room (at most `capacity` rows per centre).

    Greedy in order of regret (how much a point loses when it cannot have its
    first choice), so points with one clear centre are placed first. Rows not
    `valid` (padding) come after all real rows, so they change no real row's place.
    """
    dist = jnp.asarray(dist)
    n, k = dist.shape
    ranked = jnp.sort(dist, axis=1)
    regret = ranked[:, 1] - ranked[:, 0] if k > 1 else jnp.zeros(n)
    if valid is not None:
        regret = jnp.where(valid, regret, -jnp.inf)
    order = jnp.argsort(-regret)

    def place(counts, i):
        choice = jnp.argmin(jnp.where(counts < capacity, dist[i], jnp.inf))
        return counts.at[choice].add(1), choice

    _, chosen = jax.lax.scan(place, jnp.zeros(k, jnp.int32), order)
    return jnp.zeros(n, jnp.int32).at[order].set(chosen.astype(jnp.int32))


def assign(x: jax.Array, centroids: jax.Array, balanced: bool = False) -> jax.Array:
    return _assign(_Rows(x, x.shape[0]), centroids, balanced)


def _assign(rows: _Rows, centroids: jax.Array, balanced: bool) -> jax.Array:
    dist = sq_distances(rows.x, centroids)
    if balanced:
        return balanced_assign(dist, -(-rows.n // centroids.shape[0]), rows.valid)
    return jnp.argmin(dist, axis=1).astype(jnp.int32)


def _lloyd_step(rows: _Rows, centroids: jax.Array, balanced: bool) -> jax.Array:
    k = centroids.shape[0]
    labels = _assign(rows, centroids, balanced)
    sums = jax.ops.segment_sum(rows.x, labels, num_segments=k)  # padding rows are zeros
    counts = jax.ops.segment_sum(rows.valid.astype(rows.x.dtype), labels, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)


@functools.partial(jax.jit, static_argnames=("k", "iters", "init", "balanced", "balanced_iters"))
def kmeans(
    x: jax.Array,
    key: jax.Array,
    *,
    k: int,
    iters: int = 50,
    init: str = "kmeans++",
    balanced: bool = False,
    balanced_iters: int = 5,
) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means on x [N, D] -> (centroids [k, D], assignment int32 [N]).

    An empty cluster keeps its previous centre; a fixed number of iterations
    keeps the loop one static XLA program. With `balanced`, `balanced_iters`
    capacity-constrained steps refine the plain solution (the greedy balanced
    assignment is sequential, so it is only used where it matters: at the end).
    """
    if init not in INITS:
        raise ValueError(f"unknown k-means init '{init}' (known: {INITS})")
    rows = _split_padded(x.astype(jnp.float32))
    centroids = _init_plus_plus(rows, k, key) if init == "kmeans++" else _init_random(rows, k, key)
    centroids = jax.lax.fori_loop(0, iters, lambda _, c: _lloyd_step(rows, c, False), centroids)
    if balanced:
        centroids = jax.lax.fori_loop(0, balanced_iters, lambda _, c: _lloyd_step(rows, c, True), centroids)
    return centroids, _assign(rows, centroids, balanced)[: rows.n]


class ResidualCodes(NamedTuple):
    codebooks: np.ndarray  # float32 [L, K, D]
    codes: np.ndarray  # int32 [N, L]
    residuals: np.ndarray  # float32 [L, N, D]: what level l quantized (its input residual)


def rq_kmeans(
    x: np.ndarray,
    *,
    levels: int,
    k: int,
    seed: int,
    iters: int = 50,
    init: str = "kmeans++",
    balanced: bool = False,
    balanced_iters: int = 5,
) -> ResidualCodes:
    """RQ-KMeans: k-means on x, then on what is left (x minus its centre), `levels` times."""
    residual = jnp.asarray(x, jnp.float32)
    key = jax.random.key(seed)
    codebooks, codes, inputs = [], [], []
    for level in range(levels):
        key_l = jax.random.fold_in(key, level)
        centroids, labels = kmeans(
            residual, key_l, k=k, iters=iters, init=init, balanced=balanced, balanced_iters=balanced_iters
        )
        inputs.append(residual)
        codebooks.append(centroids)
        codes.append(labels)
        residual = residual - centroids[labels]
    return ResidualCodes(
        codebooks=np.asarray(jnp.stack(codebooks)),
        codes=np.asarray(jnp.stack(codes, axis=1), dtype=np.int32),
        residuals=np.asarray(jnp.stack(inputs)),
    )
