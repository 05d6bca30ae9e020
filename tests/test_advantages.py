"""Advantages on known groups, against plain-Python references."""
from math import comb

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sidjax.train import advantages as A

EPS = 1e-6


def test_group_normalized_matches_numpy_with_bessel_std():
    rewards = np.asarray([1.0, 0.0, 0.5, 0.25, 2.0, 2.0, 0.0, 1.0], np.float32)
    got = A.group_normalized(jnp.asarray(rewards), 4, EPS)
    groups = rewards.reshape(2, 4)
    expected = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + EPS)
    np.testing.assert_allclose(got, expected.reshape(-1), rtol=1e-5)


def test_mean_centered_is_dr_grpo():
    rewards = jnp.asarray([1.0, 0.0, 0.0, 3.0])
    np.testing.assert_allclose(A.mean_centered(rewards, 2), [0.5, -0.5, -1.5, 1.5])


@pytest.mark.parametrize("estimator", A.ESTIMATORS)
def test_all_equal_groups_get_zero_advantage_without_nan(estimator):
    rewards = jnp.asarray([0.0] * 4 + [1.0] * 4)
    success = rewards == 1.0
    got = A.compute_advantages(rewards, success, estimator=estimator, group_size=4, eps=EPS, pass_k=2)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_array_equal(got, 0.0)


def pass_at_k_reference(success, k):
    """GREAM's formula written directly with integer binomials."""
    n, c = len(success), sum(success)
    rho = 1 - comb(n - c, k) / comb(n, k)
    sigma = (rho * (1 - rho)) ** 0.5
    pos = (1 - rho) / (sigma + EPS)
    neg = (1 - rho - comb(n - c - 1, k - 1) / comb(n - 1, k - 1)) / (sigma + EPS)
    return [pos if s else neg for s in success]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_pass_at_k_bonus_matches_binomial_reference(k):
    groups = [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0]]
    success = jnp.asarray(np.asarray(groups, bool).reshape(-1))
    got = np.asarray(A.pass_at_k_bonus(success, 6, k, EPS)).reshape(3, 6)
    for row, group in zip(got, groups):
        np.testing.assert_allclose(row, pass_at_k_reference(group, k), rtol=1e-4, atol=1e-5)


def test_pass_at_k_estimator_adds_bonus_to_grpo():
    rewards = jnp.asarray([1.0, 0.5, 0.0, 0.0])
    success = rewards == 1.0
    got = jax.jit(
        lambda r, s: A.compute_advantages(r, s, estimator="pass_at_k", group_size=4, eps=EPS, pass_k=2)
    )(rewards, success)
    expected = A.group_normalized(rewards, 4, EPS) + A.pass_at_k_bonus(success, 4, 2, EPS)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="ppo"):
        A.compute_advantages(jnp.zeros(2), jnp.zeros(2, bool), estimator="ppo", group_size=2, eps=EPS, pass_k=1)


@pytest.mark.parametrize("estimator", [A.group_normalized, A.mean_centered])
def test_equal_rewards_that_round_give_exactly_zero(estimator):
    rewards = jnp.full((8,), 0.1, jnp.float32)  # float32 mean(0.1 x 8) != 0.1
    args = (8, 1e-6) if estimator is A.group_normalized else (8,)
    assert np.array_equal(np.asarray(estimator(rewards, *args)), np.zeros(8, np.float32))
