"""HR@K / NDCG@K against a plain-Python reference on random ranks."""
import math
import random

import numpy as np
import pytest

from sidjax.utils.ranking import DEFAULT_KS, format_table, hit_ranks, ranking_metrics


def _reference(ranks, k):
    hr = sum(1.0 for r in ranks if 0 <= r < k) / len(ranks)
    ndcg = sum(1.0 / math.log2(r + 2) for r in ranks if 0 <= r < k) / len(ranks)
    return hr, ndcg


def test_metrics_match_plain_python_reference():
    rng = random.Random(0)
    ranks = [rng.choice([-1, *range(60)]) for _ in range(500)]
    got = ranking_metrics(np.asarray(ranks), DEFAULT_KS)
    for k in DEFAULT_KS:
        hr, ndcg = _reference(ranks, k)
        assert got[f"HR@{k}"] == pytest.approx(hr, abs=1e-12)
        assert got[f"NDCG@{k}"] == pytest.approx(ndcg, abs=1e-12)


def test_known_values():
    got = ranking_metrics([0, 1, -1, 4], ks=(1, 3))
    assert got["HR@1"] == 0.25 and got["HR@3"] == 0.5
    assert got["NDCG@3"] == pytest.approx((1.0 + 1.0 / math.log2(3)) / 4)


def test_hit_ranks_finds_first_matching_beam():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(200, 7, 3))
    target = rng.integers(0, 3, size=(200, 3))
    valid = rng.random((200, 7)) > 0.2
    got = hit_ranks(pred, target, valid)
    for i in range(200):
        expected = next((b for b in range(7) if valid[i, b] and list(pred[i, b]) == list(target[i])), -1)
        assert got[i] == expected


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="ranks"):
        ranking_metrics([])
    with pytest.raises(ValueError, match="K must be"):
        ranking_metrics([0], ks=(0,))
    with pytest.raises(ValueError, match="predicted_sids"):
        hit_ranks(np.zeros((2, 3)), np.zeros((2, 3)))


def test_format_table_lists_every_k():
    text = format_table(ranking_metrics([0, 2]), (1, 3))
    assert "@1" in text and "@3" in text and "NDCG" in text
