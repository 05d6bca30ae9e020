"""The Markov chain's soft targets for distillation: leave-one-out counts, per-level conditionals, alignment."""
import numpy as np
import pytest

from sidjax.baselines import markov
from sidjax.configs import base_config
from sidjax.data.dataset import Split
from sidjax.data.formatting import Encoded
from sidjax.baselines.soft_targets import soft_targets
from sidjax.data.tasks import SIDSEQ, Example

SIDS = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [1, 2, 0], [1, 0, 1]])
LEVEL_SIZES = (2, 3, 4)
OFFSETS = np.array([10, 12, 15])
ROWS = [(0, [0], 1), (0, [0, 1], 2), (0, [0, 1, 2], 3), (1, [0], 1), (1, [0, 1], 4), (2, [3], 4), (2, [3, 4], 5)]


def _chain(context=2):
    c = base_config().baselines.markov
    c.context, c.decay = context, 0.5
    return markov.fit(Split.from_rows(ROWS, max_history=4), len(SIDS), c)


def _encoded(items, prompt_items=1):
    ids = np.concatenate([[1]] + [OFFSETS + SIDS[i] for i in items]).astype(np.int32)
    mask = np.zeros(len(ids), bool)
    mask[1 + 3 * prompt_items:] = True
    return Encoded(ids, mask, 1 + 3 * prompt_items)


def test_leaving_a_transition_out_equals_counting_without_it():
    """Row 4 (user 1: 1 -> 4) left out: the chain fitted on the other rows gives the same distribution."""
    rows = ROWS[:4] + ROWS[5:]
    c = base_config().baselines.markov
    c.context = 1
    full = markov.fit(Split.from_rows(ROWS, max_history=4), len(SIDS), c)
    without = markov.fit(Split.from_rows(rows, max_history=4), len(SIDS), c)
    history, history_len = np.array([[0, 1]]), np.array([2])
    want = (without.counts[1].toarray()[0] + c.smoothing * full._prior) / (without._row_totals[1] + c.smoothing)
    np.testing.assert_allclose(full.probs(history, history_len, leave_out=np.array([4]))[0], want)
    assert not np.allclose(full.probs(history, history_len)[0], want)


def test_soft_targets_are_the_chains_per_level_conditionals():
    chain = _chain()
    items = (0, 1, 2, 3)
    example = Example(SIDSEQ, "", "", items=items)
    ((ids, weights),) = soft_targets([(example, _encoded(items))], SIDS, OFFSETS, LEVEL_SIZES, chain, top_k=4)
    assert ids.shape == weights.shape == (13, 2)  # top_k is cut to the smallest level's size
    np.testing.assert_array_equal(ids[:4, 0], _encoded(items).input_ids[:4])  # the prompt: the token itself
    np.testing.assert_array_equal(weights[:4], [[1, 0]] * 4)
    for j in (1, 2, 3):
        history = np.array([list(items[max(0, j - 2):j]) + [0] * (2 - min(j, 2))])
        probs = chain.probs(history, np.array([min(j, 2)]), leave_out=np.array([items[j]]))[0]
        for level in range(3):
            row = 1 + 3 * j + level
            same_prefix = np.all(SIDS[:, :level] == SIDS[items[j], :level], axis=1)
            by_code = np.bincount(SIDS[same_prefix, level], probs[same_prefix], minlength=LEVEL_SIZES[level])
            conditional = by_code / by_code.sum()
            kept = np.sort(conditional)[::-1][:2].sum()
            codes = ids[row] - OFFSETS[level]
            assert len(set(codes)) == 2 and set(codes) <= set(range(LEVEL_SIZES[level]))
            np.testing.assert_allclose(weights[row], conditional[codes] / kept, rtol=1e-6)
            assert weights[row, 0] >= weights[row, 1]


def test_examples_without_items_keep_their_hard_targets():
    chain = _chain()
    plain = _encoded((0, 1))
    ((ids, weights),) = soft_targets([(Example(SIDSEQ, "", ""), plain)], SIDS, OFFSETS, LEVEL_SIZES, chain, 2)
    np.testing.assert_array_equal(ids[:, 0], plain.input_ids)
    assert np.all(weights[:, 0] == 1) and np.all(weights[:, 1] == 0)


def test_a_response_that_is_not_its_items_sids_is_refused():
    chain = _chain()
    wrong = Example(SIDSEQ, "", "", items=(0, 2))  # the tokens spell items 0, 1
    with pytest.raises(ValueError, match=r"response tokens are not the SIDs of its items \[2\]"):
        soft_targets([(wrong, _encoded((0, 1)))], SIDS, OFFSETS, LEVEL_SIZES, chain, 2)
    short = Example(SIDSEQ, "", "", items=(1,))
    with pytest.raises(ValueError, match="is not the SIDs of"):
        soft_targets([(short, _encoded((0, 1)))], SIDS, OFFSETS, LEVEL_SIZES, chain, 2)
