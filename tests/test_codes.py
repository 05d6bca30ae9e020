"""SID tokens, index.json round trips and the trie against brute-force prefix sets."""
import collections

import numpy as np
import pytest

from sidjax.data.minionerec import read_index
from sidjax.data.sources import shipped_dir
from sidjax.sid import codes as C
from sidjax.utils.errors import DataError


def _shipped_sids() -> np.ndarray:
    index = read_index(shipped_dir() / "Industrial_and_Scientific.index.json")
    return C.index_to_sids(index, len(index))


def _check_trie(sids: np.ndarray) -> C.SidTrie:
    trie = C.SidTrie.build(sids)
    L = sids.shape[1]
    children = collections.defaultdict(set)  # brute force: prefix -> set of next codes
    for row in map(tuple, sids.tolist()):
        for length in range(L):
            children[row[:length]].add(row[length])
    # Walk every node of the tables; the prefixes reached and their children must equal the brute force.
    reached, leaves = {}, {}
    frontier = [((), 0)]
    for level in range(L):
        nxt = []
        for prefix, node in frontier:
            row, targets = trie.codes[level][node], trie.next_node[level][node]
            valid = row[row >= 0]
            assert (row[len(valid):] == -1).all() and (targets[len(valid):] == -1).all()
            assert list(valid) == sorted(valid) and len(set(valid)) == len(valid)
            reached[prefix] = set(valid.tolist())
            for code, target in zip(valid.tolist(), targets[: len(valid)].tolist()):
                nxt.append((prefix + (code,), target))
        frontier = nxt
        assert trie.codes[level].shape[0] == len({p[:level] for p in map(tuple, sids.tolist())})
    for sid, leaf in frontier:
        leaves[sid] = leaf
    assert reached == dict(children)
    assert set(leaves) == set(map(tuple, sids.tolist()))
    # Leaves map back to exactly the items with that SID.
    for sid, leaf in leaves.items():
        items = set(np.nonzero((sids == sid).all(axis=1))[0].tolist())
        listed = trie.leaf_items[leaf]
        assert set(listed[listed >= 0].tolist()) == items
        assert tuple(trie.leaf_sids[leaf]) == sid
    np.testing.assert_array_equal(trie.leaf_sids[trie.item_leaf], sids)
    # Prefixes that do not exist are rejected.
    for prefix in [p + (c,) for p in list(children)[:50] for c in range(int(sids.max()) + 2)]:
        if len(prefix) < L:
            assert (trie.node_of_prefix(prefix) >= 0) == (prefix in children)
    return trie


def test_trie_on_paper_sids():
    sids = _shipped_sids()
    trie = _check_trie(sids)
    assert sids.shape == (3686, 3) and trie.num_leaves == 3670
    assert trie.codes[0].shape == (1, 48)
    assert len(C.collision_groups(sids)) == 15 and trie.leaf_items.shape[1] == 3


@pytest.mark.parametrize("seed", [0, 1])
def test_trie_on_random_sids(seed):
    rng = np.random.default_rng(seed)
    sids = rng.integers(0, [3, 5, 4, 6], size=(200, 4)).astype(np.int32)
    _check_trie(sids)


def test_dense_masks_and_leaf_ids():
    rng = np.random.default_rng(2)
    sids = rng.integers(0, 6, size=(60, 3)).astype(np.int32)
    trie = C.SidTrie.build(sids, level_sizes=(8, 8, 8))
    masks = trie.dense_masks()
    assert [m.shape[1] for m in masks] == [8, 8, 8]
    for level, (mask, table) in enumerate(zip(masks, trie.codes)):
        for node in range(table.shape[0]):
            row = table[node]
            assert set(np.nonzero(mask[node])[0].tolist()) == set(row[row >= 0].tolist())
    np.testing.assert_array_equal(np.asarray(C.leaf_ids(trie.codes, trie.next_node, sids)), trie.item_leaf)
    present = set(map(tuple, sids.tolist()))
    probe = rng.integers(0, 8, size=(300, 3))
    got = np.asarray(C.leaf_ids(trie.codes, trie.next_node, probe))
    for row, leaf in zip(map(tuple, probe.tolist()), got.tolist()):
        assert (leaf >= 0) == (row in present)
        if leaf >= 0:
            assert tuple(trie.leaf_sids[leaf]) == row
    with pytest.raises(ValueError, match="max_entries"):
        trie.dense_masks(max_entries=10)


def test_tokens_and_index_round_trip(tmp_path):
    assert C.sid_string([12, 7, 200, 1]) == "<a_12><b_7><c_200><d_1>"
    assert C.parse_sid_string("<a_12><b_7><c_200>") == [12, 7, 200]
    assert C.vocabulary([2, 1]) == [["<a_0>", "<a_1>"], ["<b_0>"]]
    for bad in ["<a_1><c_2>", "<a_1>x", "", "<a_x>"]:
        with pytest.raises(ValueError):
            C.parse_sid_string(bad)
    sids = _shipped_sids()
    path = tmp_path / "index.json"
    C.write_sids(path, sids)
    np.testing.assert_array_equal(C.read_sids(path, len(sids)), sids)
    shipped = read_index(shipped_dir() / "Industrial_and_Scientific.index.json")
    assert read_index(path) == shipped
    with pytest.raises(DataError, match="have no SID"):
        C.read_sids(path, len(sids) + 1)
    with pytest.raises(DataError, match="item 3"):
        C.index_to_sids({0: ["<a_1>"], 1: ["<a_2>"], 2: ["<a_2>"], 3: ["<b_1>"]}, 4, where="x.json")


def _colliding_sids(rng, n=120, k=6):
    sids = rng.integers(0, k, size=(n, 3)).astype(np.int32)
    sids[:, 2] = rng.integers(0, 2, size=n)  # crowd the last level so many items collide
    return sids


def test_statistics_match_brute_force():
    sids = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [1, 2]], dtype=np.int32)
    stats = C.sid_statistics(sids, [4, 3])
    assert stats["usage"] == [0.5, 1.0]
    p = np.array([3, 2]) / 5
    assert stats["perplexity"][0] == round(float(np.exp(-(p * np.log(p)).sum())), 3)
    assert stats["collision_groups"] == 1 and stats["items_sharing_a_sid"] == 3
    assert stats["unique_sids"] == 3 and stats["max_items_per_sid"] == 3


def test_append_level_makes_every_sid_unique():
    sids = _colliding_sids(np.random.default_rng(3))
    out = C.append_disambiguation_level(sids)
    np.testing.assert_array_equal(out[:, :3], sids)
    assert len(np.unique(out, axis=0)) == len(out)
    assert C.sid_statistics(out, [6, 6, 6, int(out[:, 3].max()) + 1])["collision_groups"] == 0
    assert (out[[i for i in range(len(out)) if (sids == sids[i]).all(1).sum() == 1], 3] == 0).all()


def test_sinkhorn_reassign_removes_collisions_on_the_last_level_only():
    rng = np.random.default_rng(4)
    sids = _colliding_sids(rng)
    residuals = rng.normal(size=(len(sids), 5))
    codebook = rng.normal(size=(32, 5))
    out = C.sinkhorn_reassign(sids, residuals, codebook, epsilon=0.003, iters=50)
    np.testing.assert_array_equal(out[:, :2], sids[:, :2])
    colliding = np.concatenate(C.collision_groups(sids))
    untouched = np.setdiff1d(np.arange(len(sids)), colliding)
    np.testing.assert_array_equal(out[untouched], sids[untouched])
    assert out[:, 2].max() < 32
    assert len(np.unique(out, axis=0)) == len(out)  # every prefix has room: no collision may remain
