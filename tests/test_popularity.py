"""Popularity baseline: train counts, deterministic order, metrics checked against plain Python."""
import math

import numpy as np

from sidjax.baselines import popularity
from sidjax.data.dataset import Split


def _split(rows):
    return Split.from_rows(rows, max_history=3)


def test_counts_and_order_break_ties_by_lower_id():
    train = _split([(0, [1], 2), (1, [2], 2), (2, [0], 4), (3, [4], 4), (4, [2], 1)])
    counts = popularity.train_counts(train, num_items=6)
    np.testing.assert_array_equal(counts, [0, 1, 2, 0, 2, 0])
    np.testing.assert_array_equal(popularity.ranking(counts), [2, 4, 1, 0, 3, 5])


def test_metrics_match_plain_python_ranks():
    rng = np.random.default_rng(0)
    num_items = 12
    train = _split([(u, [int(rng.integers(num_items))], int(t)) for u, t in enumerate(rng.zipf(1.5, 200) % num_items)])
    test = _split([(u, [0], int(t)) for u, t in enumerate(rng.integers(0, num_items, 50))])
    counts = popularity.train_counts(train, num_items)
    got = popularity.evaluate(counts, test, ks=(1, 3, 5))

    order = sorted(range(num_items), key=lambda i: (-int(counts[i]), i))
    for k in (1, 3, 5):
        ranks = [order.index(t) for t in test.target.tolist()]
        hr = sum(r < k for r in ranks) / len(ranks)
        ndcg = sum(1 / math.log2(r + 2) for r in ranks if r < k) / len(ranks)
        assert math.isclose(got[f"HR@{k}"], hr, abs_tol=1e-12)
        assert math.isclose(got[f"NDCG@{k}"], ndcg, abs_tol=1e-12)
    assert got["users"] == 50
