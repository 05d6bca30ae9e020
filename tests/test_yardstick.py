"""One yardstick: item rankings scored at SID level, per-sample ranks kept, paired bootstrap intervals."""
import math

import numpy as np
import pytest

from sidjax.baselines import item_metrics, ranking_depth, score, sid_groups, sid_ranks
from sidjax.utils import bootstrap
from sidjax.utils.ranking import ranking_metrics


def _sid_rank_by_hand(items, target, sid_of, k):
    seen = []
    for item in items:
        if sid_of[item] not in seen:
            seen.append(sid_of[item])
    rank = seen.index(sid_of[target]) if sid_of[target] in seen else -1
    return rank if rank < k else -1


def test_sid_ranks_count_each_sid_once_at_its_first_item():
    rng = np.random.default_rng(0)
    sids = rng.integers(0, 3, (40, 2))  # 40 items over at most 9 SIDs: many collisions
    groups = sid_groups(sids)
    assert all((groups[i] == groups[j]) == (sids[i] == sids[j]).all() for i in range(40) for j in range(40))
    top = np.stack([rng.permutation(40) for _ in range(30)])
    targets = rng.integers(0, 40, 30)
    got = sid_ranks(top, targets, groups, k=5)
    sid_of = [tuple(s) for s in sids]
    assert got.tolist() == [_sid_rank_by_hand(t, g, sid_of, 5) for t, g in zip(top.tolist(), targets.tolist())]
    # A hit one rank earlier at SID level than at item level: item 1 shares the target's SID.
    one = sid_ranks(np.array([[0, 1, 2, 3]]), np.array([2]), np.array([0, 1, 1, 2]), k=3)
    assert one.tolist() == [1]


def test_too_short_a_list_is_refused_rather_than_counted_a_miss():
    groups = np.array([0, 0, 0, 1, 2])  # one SID with three items
    with pytest.raises(ValueError, match="fewer than 2 distinct SIDs"):
        sid_ranks(np.array([[0, 1]]), np.array([4]), groups, k=2)
    assert ranking_depth((1, 2), groups) == 5 and ranking_depth((1, 2), None) == 2


def test_score_without_sids_is_item_level_and_with_sids_never_lower():
    rng = np.random.default_rng(1)
    sids = rng.integers(0, 4, (30, 2))
    groups = sid_groups(sids)
    ks = (1, 3, 5)
    depth = ranking_depth(ks, groups)
    top = np.stack([rng.permutation(30)[:depth] for _ in range(50)])
    targets = rng.integers(0, 30, 50)
    item = score(top, targets, ks, None)
    assert item.level == "item" and item.metrics == item_metrics(top[:, :5], targets, ks) == item.item_level
    sid = score(top, targets, ks, groups)
    assert sid.level == "sid" and sid.item_level == item.metrics
    assert sid.metrics == {**ranking_metrics(sid.ranks, ks), "users": 50.0}
    assert all(sid.metrics[k] >= item.metrics[k] for k in item.metrics)
    assert sid.metrics["HR@5"] > item.metrics["HR@5"]  # the collisions do count here


def test_bootstrap_interval_matches_the_binomial_standard_error():
    rng = np.random.default_rng(2)
    n, p = 4000, 0.15
    ranks = np.where(rng.random(n) < p, 0, -1)
    est = bootstrap.intervals(ranks, (1,), resamples=2000, seed=0)["HR@1"]
    assert est.value == ranking_metrics(ranks, (1,))["HR@1"]
    se = math.sqrt(est.value * (1 - est.value) / n)
    assert est.high - est.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap.intervals(ranks, (1,), 200, 7) == bootstrap.intervals(ranks, (1,), 200, 7)


def test_paired_difference_uses_the_same_users_for_both():
    rng = np.random.default_rng(3)
    a = rng.integers(-1, 10, 1000)
    same = bootstrap.paired_difference(a, a, (10,), resamples=300)
    assert all(e.value == e.low == e.high == 0 for e in same.values())
    better = a.copy()
    better[:100] = 0  # 100 users moved to rank 0: a paired difference well above zero
    diff = bootstrap.paired_difference(better, a, (10,), resamples=300)["NDCG@10"]
    expected = ranking_metrics(better, (10,))["NDCG@10"] - ranking_metrics(a, (10,))["NDCG@10"]
    assert diff.value == pytest.approx(expected) and diff.excludes_zero()
    unpaired = bootstrap.intervals(better, (10,), 300)["NDCG@10"]
    assert diff.high - diff.low < unpaired.high - unpaired.low  # pairing removes the users' shared variance
    with pytest.raises(ValueError, match="other users"):
        bootstrap.paired_difference(a, a[:10], (10,))
