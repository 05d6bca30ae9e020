"""Dense re-scoring of beams: each SID gains sum_m weight_m x log P_m(its items), beams re-sorted, invalid ones last."""
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sidjax.baselines import markov, sasrec
from sidjax.data.dataset import Split
from sidjax.eval.evaluate import Recommendations
from sidjax.eval.rescore import DenseRescorer, MarkovScorer, SasRecScorer

NUM_ITEMS = 6
# leaf -> items carrying its SID (-1 padded): leaf 0 is a SID shared by items 0 and 3.
LEAF_ITEMS = np.array([[0, 3], [1, -1], [2, -1], [4, -1], [5, -1]], np.int32)
HISTORIES = [[4, 1, 2, 5], [3]]  # the first is longer than SASRec's max_len: its 3 most recent items count


def _model():
    config = sasrec.SasRecConfig(num_items=NUM_ITEMS, max_len=3, dim=8, layers=1, heads=1, dropout=0.0)
    return sasrec.SasRec(config, rngs=nnx.Rngs(params=3))


def _chain():
    # train transitions 5->0 (x2), 5->2, 3->4, 2->1; context 2 mixes the last two items' rows
    rows = [(7, [5], 0), (8, [1, 5], 0), (9, [5], 2), (10, [3], 4), (11, [2], 1)]
    c = ml_collections.ConfigDict({"smoothing": 0.5, "context": 2, "decay": 0.25})
    return markov.fit(Split.from_rows(rows, max_history=4), NUM_ITEMS, c)


def _result():
    leaves = np.array([[1, 0, 4, 2], [3, 2, 0, -1]], np.int32)
    codes = np.stack([leaves * 10, leaves * 10 + 1], axis=-1)  # [n, R, 2], tied to the leaf to check the reorder
    scores = np.array([[-1.0, -1.2, -1.3, -4.0], [-0.5, -0.6, -3.0, -9.0]], np.float32)
    valid = np.array([[True, True, True, True], [True, True, True, False]])
    return Recommendations(leaves=leaves, codes=codes, scores=scores, valid=valid, reasoning=None)


def _sasrec_probs(model):
    recent = np.array([[1, 2, 5], [3, -1, -1]], np.int32)
    return np.exp(np.asarray(jax.nn.log_softmax(model(recent, np.array([3, 1], np.int32)), axis=-1), np.float64))


def _markov_probs():
    # By hand from _chain(): popularity (+1) prior over items 0..5 with targets 0,0,2,4,1 is [3,2,2,1,2,1]/11;
    # row h: (counts[h] + 0.5 prior) / (total[h] + 0.5); user 0 mixes rows 5 (weight 1) and 2 (weight .25).
    prior = np.array([3, 2, 2, 1, 2, 1]) / 11

    def row(counts):
        return (np.array(counts, float) + 0.5 * prior) / (sum(counts) + 0.5)

    first = (row([2, 0, 1, 0, 0, 0]) + 0.25 * row([0, 1, 0, 0, 0, 0])) / 1.25
    return np.stack([first, row([0, 0, 0, 0, 1, 0])])


def _expect(out, result, probs_and_weights):
    for row in range(2):
        fused = []
        for beam in range(4):
            leaf = result.leaves[row, beam]
            if not result.valid[row, beam]:
                continue
            items = [i for i in LEAF_ITEMS[leaf] if i >= 0]
            dense = sum(w * np.log(p[row, items].sum()) for p, w in probs_and_weights)
            fused.append((result.scores[row, beam] + dense, leaf))
        fused.sort(key=lambda t: -t[0])
        n_valid = len(fused)
        np.testing.assert_array_equal(out.leaves[row, :n_valid], [leaf for _, leaf in fused])
        np.testing.assert_allclose(out.scores[row, :n_valid], [s for s, _ in fused], rtol=1e-5)
        np.testing.assert_array_equal(out.codes[row, :, 0], out.leaves[row] * 10)
        assert out.valid[row, :n_valid].all() and not out.valid[row, n_valid:].any()
    assert out.leaves[1, 3] == -1 and out.scores[1, 3] == np.float32(-9.0)  # the invalid beam: last, score kept
    assert not np.array_equal(out.leaves, result.leaves), "the weights should reorder some beams here"


def test_rescore_adds_the_weighted_sasrec_sid_log_prob_and_resorts():
    model = _model()
    out = DenseRescorer([(SasRecScorer(model), 2.0)]).rescore(HISTORIES, _result(), LEAF_ITEMS)
    _expect(out, _result(), [(_sasrec_probs(model), 2.0)])


def test_markov_chain_probabilities_match_the_counts_by_hand():
    chain = _chain()
    history, lengths = np.array([[4, 1, 2, 5], [3, -1, -1, -1]]), np.array([4, 1])
    np.testing.assert_allclose(chain.probs(history, lengths), _markov_probs(), rtol=1e-12)
    np.testing.assert_allclose(chain.probs(np.full((1, 2), -1), np.array([0])), [[3, 2, 2, 1, 2, 1]] / np.float64(11))
    with pytest.raises(ValueError, match="history item 6 is outside the chain's 6 items"):
        chain.probs(np.array([[1, 6]]), np.array([2]))


def test_rescore_sums_the_weighted_terms_of_sasrec_and_markov():
    model = _model()
    rescorer = DenseRescorer([(SasRecScorer(model), 0.5), (MarkovScorer(_chain()), 1.5)])
    out = rescorer.rescore(HISTORIES, _result(), LEAF_ITEMS)
    _expect(out, _result(), [(_sasrec_probs(model), 0.5), (_markov_probs(), 1.5)])


def test_saved_dense_models_reload_as_the_same_rescorer(tmp_path):
    model, chain = _model(), _chain()
    sasrec.save(model, tmp_path / "sasrec", step=1)
    markov.save(chain, tmp_path / "markov")
    loaded = DenseRescorer.load([("sasrec", tmp_path / "sasrec", 0.5), ("markov", tmp_path / "markov", 1.5)])
    built = DenseRescorer([(SasRecScorer(model), 0.5), (MarkovScorer(chain), 1.5)])
    items = LEAF_ITEMS[np.maximum(_result().leaves, 0)]
    np.testing.assert_allclose(loaded.sid_log_probs(HISTORIES, items), built.sid_log_probs(HISTORIES, items),
                               rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="no Markov chain here"):
        markov.load(tmp_path / "sasrec")
    with pytest.raises(ValueError, match="no dense model of stage 'sft'"):
        DenseRescorer.load([("sft", tmp_path / "sasrec", 1.0)])


def test_rescore_rejects_bad_weights_mixed_item_counts_and_items_beyond_the_models():
    with pytest.raises(ValueError, match="weights must be > 0"):
        DenseRescorer([(SasRecScorer(_model()), 0.0)])
    with pytest.raises(ValueError, match="at least one"):
        DenseRescorer([])
    wider = markov.fit(Split.from_rows([(0, [1], 2)], max_history=2), NUM_ITEMS + 1,
                       ml_collections.ConfigDict({"smoothing": 1.0, "context": 1, "decay": 1.0}))
    with pytest.raises(ValueError, match=r"different item counts \[6, 7\]"):
        DenseRescorer([(SasRecScorer(_model()), 1.0), (MarkovScorer(wider), 1.0)])
    with pytest.raises(ValueError, match="beyond the dense models' 6 items"):
        DenseRescorer([(SasRecScorer(_model()), 1.0)]).sid_log_probs([[1]], np.array([[[NUM_ITEMS, -1]]], np.int32))


def test_saved_beams_that_are_not_eval_records_are_refused_naming_the_line(tmp_path):
    import json

    from sidjax.eval.rescore_tuning import read_beams

    good = {"history": [{"item": 1}], "target": {"sid": "<a_1><b_2>"},
            "recommendations": [{"sid": "<a_1><b_2>", "score": -1.0, "items": [3, 4]}]}
    path = tmp_path / "valid.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "target": {}}) + "\n")
    with pytest.raises(ValueError, match=r"valid.jsonl:2: not an eval sample record \(field 'sid'"):
        read_beams(path)
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"valid.jsonl:2: not a JSON line"):
        read_beams(path)
    path.write_text(json.dumps({**good, "reasoning": "<think>x</think>"}) + "\n")
    with pytest.raises(ValueError, match=r"valid.jsonl:1: a reasoning-mode sample"):
        read_beams(path)
    path.write_text(json.dumps(good) + "\n")
    histories, scores, items, sids, targets = read_beams(path)
    assert histories == [[1]] and scores.tolist() == [[-1.0]] and items.tolist() == [[[3, 4]]]
    assert sids.tolist() == [["<a_1><b_2>"]] and targets.tolist() == ["<a_1><b_2>"]
