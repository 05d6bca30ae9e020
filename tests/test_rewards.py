"""Rewards on hand-made token sequences, checked against the papers' definitions."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sidjax.decode.beam import TrieTables
from sidjax.sid.codes import SidTrie
from sidjax.train import rewards as R

# Vocabulary: text tokens 0..9 (5 = `</think>`, 0 = pad), then 3 SID levels of K = 4 codes each.
THINK_END = 5
OFFSETS = jnp.asarray([10, 14, 18], jnp.int32)
K = 4
SIDS = np.asarray([[0, 1, 2], [0, 1, 3], [1, 0, 0], [2, 3, 1]])
TABLES = TrieTables.from_trie(SidTrie.build(SIDS, (K, K, K)), OFFSETS)


def sid(a, b, c):
    return [10 + a, 14 + b, 18 + c]


def batch(rows, width=8):
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
        mask[i, : len(row)] = True
    return jnp.asarray(tokens), jnp.asarray(mask)


def test_parse_sid_reasoning_mode_reads_after_think_and_flags_broken_format():
    tokens, mask = batch(
        [
            [1, 2, THINK_END, *sid(0, 1, 2)],  # good
            [THINK_END, 3, 3, *sid(2, 3, 1)],  # good: text (newlines) between </think> and the SID
            [1, 2, 3, *sid(0, 1, 2)],  # no </think>
            [THINK_END, *sid(0, 1, 2)[:2], 3],  # third token is text
            [1, THINK_END, *sid(0, 0, 0)[:2]],  # SID cut short by the end of the completion
            [1, THINK_END, sid(0, 0, 0)[1], sid(0, 0, 0)[0], sid(0, 0, 0)[2]],  # levels out of order
        ]
    )
    parsed = R.parse_sid(tokens, mask, TABLES, THINK_END)
    np.testing.assert_array_equal(parsed.well_formed, [True, True, False, False, False, False])
    np.testing.assert_array_equal(parsed.codes[:2], [[0, 1, 2], [2, 3, 1]])


def test_parse_sid_direct_mode_reads_first_tokens():
    tokens, mask = batch([sid(2, 3, 1), [1, *sid(2, 3, 1)], [sid(2, 3, 1)[1], sid(2, 3, 1)[2]]])
    parsed = R.parse_sid(tokens, mask, TABLES, None)
    np.testing.assert_array_equal(parsed.well_formed, [True, True, False])
    np.testing.assert_array_equal(parsed.codes[0], [2, 3, 1])


def test_matched_prefix_levels_stops_at_first_mismatch():
    codes = jnp.asarray([[0, 1, 2], [0, 1, 3], [0, 0, 2], [1, 1, 2]])
    target = jnp.asarray([[0, 1, 2]] * 4)
    np.testing.assert_array_equal(R.matched_prefix_levels(codes, target), [3, 2, 1, 0])


def test_hierarchical_reward_sidreasoner_values():
    target = jnp.asarray([[0, 1, 2]] * 6)
    tokens, mask = batch(
        [
            [THINK_END, *sid(0, 1, 2)],  # exact: 1.0 + 0.1
            [THINK_END, *sid(0, 1, 3)],  # two levels, real item: 0.5 + 0.1
            [THINK_END, *sid(0, 2, 2)],  # one level, not an item: 0.25
            [THINK_END, *sid(1, 0, 0)],  # none, real item: 0.1
            [9, *sid(0, 1, 2)],  # exact codes but no </think>: 0
            [THINK_END, *sid(3, 3, 3)],  # nothing: 0
        ]
    )
    out = R.compute_rewards(
        tokens, mask, target, tables=TABLES, think_end_id=THINK_END, group_size=6, weights={"prefix": 1.0},
        prefix_credit=(0.25, 0.5), real_item_bonus=0.1, gream_credit=(0.5, 0.707, 0.866, 0.95),
    )
    np.testing.assert_allclose(out.components["prefix"], [1.1, 0.6, 0.25, 0.1, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out.total, out.components["prefix"], atol=1e-6)
    np.testing.assert_array_equal(out.hit, [True, False, False, False, False, False])
    np.testing.assert_array_equal(out.components["exact"], [1, 0, 0, 0, 0, 0])


def test_gream_levels_follow_residual_sensitive_schedule():
    credit = (0.5, 0.707, 0.866, 0.95)
    matched = jnp.arange(6)
    got = R.prefix_schedule(matched, 5, credit)
    np.testing.assert_allclose(got, [0.0, 0.5, 0.707, 0.866, 0.95, 1.0], atol=1e-6)
    # For L = 3, two matched levels are 0.707 and all three 1.0.
    np.testing.assert_allclose(R.prefix_schedule(jnp.arange(4), 3, credit), [0, 0.5, 0.707, 1.0], atol=1e-6)


def test_rank_penalty_matches_minionerec():
    g = 4
    hit = jnp.asarray([False, True, False, False, False, False, False, False])
    got = np.asarray(R.rank_penalty(hit, g))
    norm = sum(1 / math.log2(j + 2) for j in range(g))
    expected_hit_group = [-(1 / math.log2(i + 2)) / norm for i in range(g)]
    expected_hit_group[1] = 0.0
    np.testing.assert_allclose(got[:4], expected_hit_group, atol=1e-6)
    np.testing.assert_array_equal(got[4:], 0.0)


def test_weighted_total_and_jit():
    target = jnp.asarray([[0, 1, 2]] * 4)
    tokens, mask = batch([sid(0, 1, 2), sid(0, 1, 3), sid(1, 0, 0), sid(0, 0, 0)])
    kwargs = dict(
        tables=TABLES, think_end_id=None, group_size=4, weights={"exact": 1.0, "rank": 1.0, "gream": 0.5},
        prefix_credit=(0.25, 0.5), real_item_bonus=0.1, gream_credit=(0.5, 0.707),
    )
    out = jax.jit(lambda t, m, y: R.compute_rewards(t, m, y, **kwargs))(tokens, mask, target)
    c = out.components
    np.testing.assert_allclose(out.total, c["exact"] + c["rank"] + 0.5 * c["gream"], atol=1e-6)
    np.testing.assert_allclose(c["gream"], [1.0, 0.707, 0.0, 0.5], atol=1e-6)
    assert float(c["rank"][0]) == 0.0 and float(c["rank"][1]) < 0.0


def test_search_credit_is_the_ndcg_of_the_target_among_the_beams_after_a_closed_thought():
    target = jnp.asarray([[0, 1, 2]] * 4)
    searched = jnp.asarray([
        [[0, 1, 2], [0, 1, 3], [1, 0, 0]],  # rank 0
        [[1, 0, 0], [2, 3, 1], [0, 1, 2]],  # rank 2
        [[1, 0, 0], [-1, -1, -1], [-1, -1, -1]],  # absent (fewer real beams)
        [[0, 1, 2], [0, 1, 3], [1, 0, 0]],  # rank 0, but the thought never closed
    ])
    closed = jnp.asarray([True, True, True, False])
    np.testing.assert_allclose(R.search_credit(searched, target, closed), [1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_a_sid_copied_from_the_history_earns_prefix_credit_only_as_the_target():
    target = jnp.asarray([[0, 1, 2]] * 3)
    tokens, mask = batch([sid(0, 1, 3), sid(0, 1, 2), sid(0, 1, 3)])
    history = jnp.asarray([
        [sid(0, 1, 3), [-1, -1, -1]],  # the answer repeats a history item of the target's category
        [sid(0, 1, 2), sid(2, 3, 1)],  # the answer repeats a history item that is the target
        [sid(2, 3, 1), [-1, -1, -1]],  # the answer is new to the history
    ])
    kwargs = dict(tables=TABLES, think_end_id=None, group_size=3, weights={"prefix": 1.0, "gream": 1.0},
                  prefix_credit=(0.25, 0.5), real_item_bonus=0.1, gream_credit=(0.5, 0.707))
    paid = R.compute_rewards(tokens, mask, target, **kwargs).components
    withheld = R.compute_rewards(tokens, mask, target, history=history, **kwargs).components
    np.testing.assert_allclose(paid["prefix"], [0.6, 1.1, 0.6], atol=1e-6)
    np.testing.assert_allclose(withheld["prefix"], [0.1, 1.1, 0.6], atol=1e-6)  # the real-item bonus stays
    np.testing.assert_allclose(withheld["gream"], [0.0, 1.0, 0.707], atol=1e-6)


def test_the_search_reward_without_a_search_is_refused():
    with pytest.raises(ValueError, match="searches after each thought"):
        R.compute_rewards(
            *batch([[1, THINK_END] + sid(0, 1, 2)]), jnp.asarray([[0, 1, 2]]), tables=TABLES, think_end_id=THINK_END,
            group_size=1, weights={"search": 1.0}, prefix_credit=(0.25, 0.5), real_item_bonus=0.1,
            gream_credit=(0.5,),
        )


def test_unknown_component_is_named():
    with pytest.raises(ValueError, match="bogus"):
        R.compute_rewards(
            *batch([sid(0, 1, 2)]), jnp.asarray([[0, 1, 2]]), tables=TABLES, think_end_id=None, group_size=1,
            weights={"bogus": 1.0}, prefix_credit=(0.25, 0.5), real_item_bonus=0.1, gream_credit=(0.5,),
        )
