"""The dataset object: statistics of the shipped data, sample/sequence consistency, validation."""
import dataclasses

import numpy as np
import pytest

from sidjax.data import minionerec
from sidjax.data.dataset import SPLITS, Item, RecDataset, Split
from sidjax.data.sources import shipped_dir
from sidjax.utils.errors import DataError


@pytest.fixture(scope="module")
def shipped() -> RecDataset:
    return minionerec.load_recbole_dir(shipped_dir(), "Industrial_and_Scientific", 10)


def test_shipped_statistics(shipped):
    stats = shipped.statistics()
    assert (stats["users"], stats["items"], stats["interactions"]) == (7694, 3686, 53018)
    assert (stats["train_samples"], stats["valid_samples"], stats["test_samples"]) == (36259, 4532, 4533)
    means = (stats["train_mean_history"], stats["valid_mean_history"], stats["test_mean_history"])
    assert means == (3.77, 4.643, 4.957)
    assert shipped.num_items == len(shipped.titles()) == len(shipped.paper_sids) == 3686
    assert len({"".join(t) for t in shipped.paper_sids.values()}) == 3670, "the papers' SIDs have collisions"


def test_shipped_samples_are_the_sliding_windows_of_the_sequences(shipped):
    # one sample per position >= 1 of every sequence, history = the last <= 10 items before it,
    # and per user the samples come in time order across train, valid, test.
    position = {user: 1 for user in shipped.sequences}
    for split in SPLITS:
        s = shipped.splits[split]
        assert s.history.shape == (len(s), 10) and s.history.dtype == np.int32
        assert np.all((s.history >= 0) == (np.arange(10)[None, :] < s.history_len[:, None])), "-1 pads at the end"
        for user, history, target in zip(s.users.tolist(), s.histories(), s.target.tolist()):
            seq, i = shipped.sequences[user], position[user]
            assert (history, target) == (list(seq[max(0, i - 10) : i]), seq[i])
            position[user] = i + 1
    assert all(position[u] == len(seq) for u, seq in shipped.sequences.items())


def test_split_from_rows_pads_and_keeps_the_latest_history():
    s = Split.from_rows([(3, [5, 6, 7, 8], 9), (4, [1], 2)], max_history=3)
    np.testing.assert_array_equal(s.history, [[6, 7, 8], [1, -1, -1]])
    assert s.histories() == [[6, 7, 8], [1]] and s.history_len.tolist() == [3, 1]
    assert s.users.tolist() == [3, 4] and s.target.tolist() == [9, 2] and len(s) == 2


def tiny(**changes) -> RecDataset:
    rows = [(0, [0], 1), (0, [0, 1], 2)]
    base = dict(
        name="tiny",
        items=(Item("a"), Item("b"), Item("c")),
        sequences={0: (0, 1, 2)},
        splits={s: Split.from_rows(rows, 4) for s in SPLITS},
        paper_sids=None,
    )
    return RecDataset(**{**base, **changes})


def test_check_accepts_a_consistent_dataset():
    ds = tiny(paper_sids={0: ("<a_0>",), 1: ("<a_1>",), 2: ("<a_2>",)})
    assert ds.check("here") is ds
    assert ds.statistics()["train_mean_history"] == 1.5


def test_check_rejects_bad_datasets():
    with pytest.raises(DataError, match=r"^here: user 0: unknown item id 7 \(items are 0\.\.2\)"):
        tiny(sequences={0: (0, 7)}).check("here")
    good = tiny().splits["train"]
    with pytest.raises(DataError, match=r"^here: split 'valid' is empty"):
        tiny(splits={"train": good, "valid": Split.from_rows([], 4), "test": good}).check("here")
    with pytest.raises(DataError, match=r"^here: split 'test' is missing"):
        tiny(splits={"train": good, "valid": good}).check("here")
    bad_target = dataclasses.replace(good, target=np.asarray([1, 3], np.int32))
    with pytest.raises(DataError, match=r"split 'train': unknown item id 3"):
        tiny(splits={"train": bad_target, "valid": good, "test": good}).check("here")
    with pytest.raises(DataError, match=r"SID index does not match items 0\.\.2: missing \[2\]"):
        tiny(paper_sids={0: ("<a_0>",), 1: ("<a_1>",)}).check("here")
