"""SASRec: padding never leaks, ranking matches a brute-force sort, and training learns a simple rule."""
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sidjax.baselines import sasrec
from sidjax.configs import baselines as baselines_config
from sidjax.data.dataset import Split

NUM_ITEMS = 16


def _model(dropout=0.0, max_len=4):
    config = sasrec.SasRecConfig(num_items=NUM_ITEMS, max_len=max_len, dim=16, layers=2, heads=2, dropout=dropout)
    return sasrec.SasRec(config, rngs=nnx.Rngs(params=0))


def test_scores_ignore_padding_and_history_width():
    score = jax.jit(_model())
    history = np.array([[3, 5, -1, -1], [7, -1, -1, -1]], np.int32)
    lengths = np.array([2, 1], np.int32)
    logits = np.asarray(score(history, lengths))
    assert logits.shape == (2, NUM_ITEMS)
    # Whatever sits after history_len (here: real ids instead of -1) must not change the scores.
    np.testing.assert_allclose(np.asarray(score(np.array([[3, 5, 9, 1], [7, 2, 2, 2]], np.int32), lengths)),
                               logits, rtol=1e-5, atol=1e-5)
    # A narrower padded array holding the same histories scores the same.
    np.testing.assert_allclose(np.asarray(score(history[:, :2], lengths)), logits, rtol=1e-5, atol=1e-5)


def test_top_items_match_brute_force_sort_across_batches():
    model = _model()
    rng = np.random.default_rng(0)
    rows = [(u, rng.integers(0, NUM_ITEMS, int(rng.integers(1, 5))).tolist(), int(rng.integers(NUM_ITEMS)))
            for u in range(11)]
    split = Split.from_rows(rows, max_history=4)
    top = sasrec.top_items(model, split, k=5, batch_size=4)  # 11 rows: the last batch is padded
    expected = np.argsort(-np.asarray(jax.jit(model)(split.history, split.history_len)), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(top, expected)


def _next_item_split(n, seed):
    """Histories of consecutive ids; the target is the item after the last one."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n):
        length = int(rng.integers(1, 5))
        start = int(rng.integers(0, NUM_ITEMS - length))
        rows.append((u, list(range(start, start + length)), start + length))
    return Split.from_rows(rows, max_history=4)


def _settings(**overrides) -> ml_collections.ConfigDict:
    c = baselines_config.section().sasrec
    c.update({**dict(dim=16, layers=1, heads=1, learning_rate=1e-2, batch_size=32, max_epochs=8, patience=2,
                     dropouts=(0.0, 0.2), select_metric="NDCG@3"), **overrides})
    return c


def test_tune_learns_next_item_rule_and_is_deterministic():
    train, valid, test = _next_item_split(256, 0), _next_item_split(64, 1), _next_item_split(64, 2)
    c = _settings()
    best, trials = sasrec.tune(train, valid, NUM_ITEMS, c, ks=(1, 3), eval_batch_size=32)
    assert [t["dropout"] for t in trials] == [0.0, 0.2]
    assert best.valid["NDCG@3"] == max(t["NDCG@3"] for t in trials)
    assert 1 <= best.best_epoch <= best.epochs <= c.max_epochs
    assert len(best.curve) == best.epochs
    test_metrics = sasrec.evaluate(best.model, test, (1, 3), 32)
    assert test_metrics["HR@1"] > 0.8, best.curve  # chance is 1/16

    again = sasrec.fit(train, valid, NUM_ITEMS, c, best.dropout, (1, 3), 32)
    assert again.curve == best.curve


def test_fit_rejects_a_train_split_smaller_than_a_batch():
    with pytest.raises(ValueError, match="fewer than one batch"):
        sasrec.fit(_next_item_split(8, 0), _next_item_split(8, 1), NUM_ITEMS, _settings(batch_size=32), 0.0, (1,), 8)


def test_saved_model_reloads_with_the_same_scores(tmp_path):
    model = _model(dropout=0.3)
    sasrec.save(model, tmp_path / "sasrec", step=7)
    loaded = sasrec.load(tmp_path / "sasrec")
    assert loaded.config == model.config
    history, lengths = np.array([[3, 5, 1, -1], [7, -1, -1, -1]], np.int32), np.array([3, 1], np.int32)
    np.testing.assert_array_equal(np.asarray(loaded(history, lengths)), np.asarray(model(history, lengths)))
    with pytest.raises(FileNotFoundError, match="sasrec_config.json"):
        sasrec.load(tmp_path / "elsewhere")
