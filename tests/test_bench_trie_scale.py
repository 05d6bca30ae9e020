"""bench.trie_scale's catalogue and memory accounting on small tries (the timing runs only as a script)."""
import numpy as np
import pytest

from bench import trie_scale
from sidjax.decode.beam import TrieTables
from sidjax.sid.codes import SidTrie


def test_random_sids_are_distinct_seeded_and_in_range():
    sids = trie_scale.random_sids(2000, 3, 16, seed=0)
    assert sids.shape == (2000, 3) and sids.dtype == np.int32
    assert sids.min() >= 0 and sids.max() < 16
    assert len(np.unique(sids, axis=0)) == 2000
    np.testing.assert_array_equal(sids, trie_scale.random_sids(2000, 3, 16, seed=0))
    assert not np.array_equal(sids, trie_scale.random_sids(2000, 3, 16, seed=1))


def test_random_sids_refuse_more_items_than_the_code_space():
    with pytest.raises(ValueError, match="do not fit"):
        trie_scale.random_sids(9, 3, 2, seed=0)


def test_table_bytes_count_the_decoding_tables():
    sids = np.array([[0, 1], [0, 2], [1, 0]])
    trie = SidTrie.build(sids, (2, 3))
    tables = TrieTables.from_trie(trie, [10, 12])
    # level 0: root x 2 codes; level 1: 2 nodes x max branching 2; codes + next_node int32; 2 offsets.
    assert trie_scale.table_bytes(tables) == 4 * (2 * (1 * 2) + 2 * (2 * 2) + 2)
    assert trie_scale.host_bytes(trie) == trie.leaf_sids.nbytes + trie.leaf_items.nbytes + trie.item_leaf.nbytes


def test_overhead_is_the_constrained_excess_in_percent():
    assert trie_scale.overhead_pct(1.05, 1.0) == pytest.approx(5.0)
    assert trie_scale.overhead_pct(0.99, 1.0) == pytest.approx(-1.0)
