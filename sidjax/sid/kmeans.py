"""Jitted k-means (k-means++ or random init, optionally size-balanced) and RQ-KMeans.

k-means initialises the RQ-VAE codebooks; RQ-KMeans (k-means on the residual,
level after level) is a training-free way to get SIDs. Balanced assignment
caps every cluster at ceil(N / k) items, which spreads items over the codes
and so lowers SID collisions.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

INITS = ("kmeans++", "random")


def sq_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[N, D] x [K, D] -> squared Euclidean distances [N, K] (one matmul)."""
    cross = x @ centroids.T
    return jnp.maximum(
        jnp.sum(x * x, axis=1, keepdims=True) - 2.0 * cross + jnp.sum(centroids * centroids, axis=1)[None, :], 0.0
    )


def _init_random(x: jax.Array, k: int, key: jax.Array) -> jax.Array:
    n = x.shape[0]
    idx = jax.random.choice(key, n, (k,), replace=n < k)
    return x[idx]


def _init_plus_plus(x: jax.Array, k: int, key: jax.Array) -> jax.Array:
    """k-means++: each next centre sampled with probability proportional to its squared distance."""
    n = x.shape[0]
    key, first = jax.random.split(key)
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[jax.random.randint(first, (), 0, n)])
    d2 = jnp.sum((x - centroids[0]) ** 2, axis=1)

    def body(i, carry):
        centroids, d2 = carry
        # All points already chosen (fewer distinct points than k): fall back to uniform sampling.
        logits = jnp.where(d2.sum() > 0, jnp.log(d2), 0.0)
        pick = jax.random.categorical(jax.random.fold_in(key, i), logits)
        centroids = centroids.at[i].set(x[pick])
        return centroids, jnp.minimum(d2, jnp.sum((x - x[pick]) ** 2, axis=1))

    centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, d2))
    return centroids


def balanced_assign(dist: jax.Array, capacity: int) -> jax.Array:
    """Assign each row to its nearest centre that still has room (at most `capacity` rows per centre).

    Greedy in order of regret (how much a point loses when it cannot have its
    first choice), so points with one clear centre are placed first.
    """
    dist = jnp.asarray(dist)
    n, k = dist.shape
    ranked = jnp.sort(dist, axis=1)
    regret = ranked[:, 1] - ranked[:, 0] if k > 1 else jnp.zeros(n)
    order = jnp.argsort(-regret)

    def place(counts, i):
        choice = jnp.argmin(jnp.where(counts < capacity, dist[i], jnp.inf))
        return counts.at[choice].add(1), choice

    _, chosen = jax.lax.scan(place, jnp.zeros(k, jnp.int32), order)
    return jnp.zeros(n, jnp.int32).at[order].set(chosen.astype(jnp.int32))


def assign(x: jax.Array, centroids: jax.Array, balanced: bool = False) -> jax.Array:
    dist = sq_distances(x, centroids)
    if balanced:
        return balanced_assign(dist, -(-x.shape[0] // centroids.shape[0]))
    return jnp.argmin(dist, axis=1).astype(jnp.int32)


def _lloyd_step(x: jax.Array, centroids: jax.Array, balanced: bool) -> jax.Array:
    k = centroids.shape[0]
    labels = assign(x, centroids, balanced)
    sums = jax.ops.segment_sum(x, labels, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), labels, num_segments=k)
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
    x = x.astype(jnp.float32)
    if init not in INITS:
        raise ValueError(f"unknown k-means init '{init}' (known: {INITS})")
    centroids = _init_plus_plus(x, k, key) if init == "kmeans++" else _init_random(x, k, key)
    centroids = jax.lax.fori_loop(0, iters, lambda _, c: _lloyd_step(x, c, False), centroids)
    if balanced:
        centroids = jax.lax.fori_loop(0, balanced_iters, lambda _, c: _lloyd_step(x, c, True), centroids)
    return centroids, assign(x, centroids, balanced)


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
