"""Dense re-scoring of beams: each SID gains weight x log P_SASRec(its items), beams re-sorted, invalid ones last."""
import jax
import numpy as np
import pytest
from flax import nnx

from sidjax.baselines import sasrec
from sidjax.eval.evaluate import Recommendations
from sidjax.eval.rescore import DenseRescorer

NUM_ITEMS = 6
# leaf -> items carrying its SID (-1 padded): leaf 0 is a SID shared by items 0 and 3.
LEAF_ITEMS = np.array([[0, 3], [1, -1], [2, -1], [4, -1], [5, -1]], np.int32)


def _model():
    config = sasrec.SasRecConfig(num_items=NUM_ITEMS, max_len=3, dim=8, layers=1, heads=1, dropout=0.0)
    return sasrec.SasRec(config, rngs=nnx.Rngs(params=3))


def _result():
    leaves = np.array([[1, 0, 4, 2], [3, 2, 0, -1]], np.int32)
    codes = np.stack([leaves * 10, leaves * 10 + 1], axis=-1)  # [n, R, 2], tied to the leaf to check the reorder
    scores = np.array([[-1.0, -1.2, -1.3, -4.0], [-0.5, -0.6, -3.0, -9.0]], np.float32)
    valid = np.array([[True, True, True, True], [True, True, True, False]])
    return Recommendations(leaves=leaves, codes=codes, scores=scores, valid=valid, reasoning=None)


def test_rescore_adds_the_weighted_dense_sid_log_prob_and_resorts():
    model, weight = _model(), 2.0
    histories = [[4, 1, 2, 5], [3]]  # the first is longer than max_len: its 3 most recent items count
    out = DenseRescorer(model, weight).rescore(histories, _result(), LEAF_ITEMS)

    recent = np.array([[1, 2, 5], [3, -1, -1]], np.int32)
    log_probs = np.asarray(jax.nn.log_softmax(model(recent, np.array([3, 1], np.int32)), axis=-1), np.float64)
    result = _result()
    for row in range(2):
        fused = []
        for beam in range(4):
            leaf = result.leaves[row, beam]
            if not result.valid[row, beam]:
                continue
            items = [i for i in LEAF_ITEMS[leaf] if i >= 0]
            dense = np.log(np.exp(log_probs[row, items]).sum())
            fused.append((result.scores[row, beam] + weight * dense, leaf))
        fused.sort(key=lambda t: -t[0])
        n_valid = len(fused)
        np.testing.assert_array_equal(out.leaves[row, :n_valid], [leaf for _, leaf in fused])
        np.testing.assert_allclose(out.scores[row, :n_valid], [s for s, _ in fused], rtol=1e-5)
        np.testing.assert_array_equal(out.codes[row, :, 0], out.leaves[row] * 10)
        assert out.valid[row, :n_valid].all() and not out.valid[row, n_valid:].any()
    assert out.leaves[1, 3] == -1 and out.scores[1, 3] == np.float32(-9.0)  # the invalid beam: last, score kept
    assert not np.array_equal(out.leaves, result.leaves), "the weight should reorder some beams here"


def test_rescore_rejects_a_bad_weight_and_items_beyond_the_model():
    with pytest.raises(ValueError, match="weight must be > 0"):
        DenseRescorer(_model(), 0.0)
    with pytest.raises(ValueError, match="beyond the dense model's 6 items"):
        DenseRescorer(_model(), 1.0).sid_log_probs([[1]], np.array([[[NUM_ITEMS, -1]]], np.int32))
