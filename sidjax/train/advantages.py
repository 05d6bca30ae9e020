"""Group-relative advantages for GRPO, in-graph over flattened groups (row = b * G + g).

- `group_normalized`: GRPO's (r - mean) / (std + eps), std with Bessel's correction.
- `mean_centered`: Dr. GRPO's r - mean (no std division, so easy and hard prompts
  are not re-weighted).
- `pass_at_k_bonus`: GREAM's bonus-calibrated term: the exact advantage of the
  pass@k objective for a group with c successes out of n, added to the GRPO one so
  that rare successes in sparse-reward groups get a strong push.
Groups whose rewards are all equal get exactly zero advantage (no NaN).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

ESTIMATORS = ("grpo", "dr_grpo", "pass_at_k")


def _groups(values: jax.Array, group_size: int) -> jax.Array:
    return values.reshape(-1, group_size)


def _centered(groups: jax.Array) -> jax.Array:
    """r - mean(group), exactly 0 for a group of equal rewards (a float mean of equal values can be 1 ulp off)."""
    shifted = groups - groups[:, :1]
    return shifted - shifted.mean(axis=1, keepdims=True)


def mean_centered(rewards: jax.Array, group_size: int) -> jax.Array:
    """f32[N]: r - mean(group)."""
    return _centered(_groups(rewards.astype(jnp.float32), group_size)).reshape(-1)


def group_normalized(rewards: jax.Array, group_size: int, eps: float) -> jax.Array:
    """f32[N]: (r - mean) / (std + eps) per group."""
    centered = _centered(_groups(rewards.astype(jnp.float32), group_size))
    std = jnp.sqrt((centered**2).sum(axis=1, keepdims=True) / (group_size - 1))
    return (centered / (std + eps)).reshape(-1)


def _log_comb(n: jax.Array, k: jax.Array) -> jax.Array:
    """log C(n, k), -inf where k < 0 or k > n (so exp gives C = 0)."""
    valid = (k >= 0) & (k <= n)
    n_, k_ = jnp.maximum(n, 0.0), jnp.clip(k, 0.0, jnp.maximum(n, 0.0))
    value = gammaln(n_ + 1.0) - gammaln(k_ + 1.0) - gammaln(n_ - k_ + 1.0)
    return jnp.where(valid, value, -jnp.inf)


def pass_at_k_bonus(success: jax.Array, group_size: int, k: int, eps: float) -> jax.Array:
    """f32[N]: the pass@k advantage of each completion given its group's successes.

    With n = G samples and c successes, pass@k rho = 1 - C(n-c, k) / C(n, k),
    sigma = sqrt(rho (1 - rho)); a success gets (1 - rho) / sigma and a failure
    (1 - rho - C(n-c-1, k-1) / C(n-1, k-1)) / sigma. Both vanish when c = 0 or c = n.
    """
    n = jnp.float32(group_size)
    kk = jnp.float32(k)
    groups = _groups(success, group_size)
    c = groups.sum(axis=1, keepdims=True).astype(jnp.float32)
    rho = 1.0 - jnp.exp(_log_comb(n - c, kk) - _log_comb(n, kk))
    sigma = jnp.sqrt(jnp.clip(rho * (1.0 - rho), 0.0))
    fail_share = jnp.exp(_log_comb(n - c - 1.0, kk - 1.0) - _log_comb(n - 1.0, kk - 1.0))
    positive = (1.0 - rho) / (sigma + eps)
    negative = (1.0 - rho - fail_share) / (sigma + eps)
    degenerate = (c == 0) | (c == n)
    advantage = jnp.where(degenerate, 0.0, jnp.where(groups, positive, negative))
    return advantage.reshape(-1)


def compute_advantages(
    rewards: jax.Array,
    success: jax.Array,
    *,
    estimator: str,
    group_size: int,
    eps: float,
    pass_k: int,
) -> jax.Array:
    """f32[N] advantages by the configured estimator ('grpo', 'dr_grpo' or 'pass_at_k')."""
    if estimator == "grpo":
        return group_normalized(rewards, group_size, eps)
    if estimator == "dr_grpo":
        return mean_centered(rewards, group_size)
    if estimator == "pass_at_k":
        return group_normalized(rewards, group_size, eps) + pass_at_k_bonus(success, group_size, pass_k, eps)
    raise ValueError(f"unknown advantage estimator '{estimator}' (known: {ESTIMATORS})")
