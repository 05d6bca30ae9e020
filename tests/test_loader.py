"""The grain batch pipeline: determinism, exact resume, disjoint complete shards, length buckets."""
import grain
import numpy as np
import pytest

from sidjax.data import loader
from sidjax.data.dataset import Split


def columns(n: int = 23) -> dict[str, np.ndarray]:
    return {"id": np.arange(n), "feature": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)}


def collect(ds) -> list[dict[str, np.ndarray]]:
    return [dict(b) for b in ds]


def ids_of(batches) -> list[list[int]]:
    return [b["id"][b[loader.EXAMPLE_MASK]].tolist() for b in batches]


def test_same_seed_same_batches_and_each_epoch_reshuffled():
    def run(seed):
        return ids_of(loader.batches(columns(), batch_size=4, seed=seed, num_epochs=2, shard_index=0, shard_count=1))

    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert first != other
    assert len(first) == 2 * (23 // 4)
    epoch0, epoch1 = first[:5], first[5:]
    assert epoch0 != epoch1
    for epoch in (epoch0, epoch1):  # drop_remainder: 20 distinct examples per epoch
        flat = sum(epoch, [])
        assert len(set(flat)) == 20


def test_no_shuffle_keeps_record_order_and_rows_match_records():
    ds = loader.batches(columns(), batch_size=5, shuffle=False, drop_remainder=False, shard_index=0, shard_count=1)
    batches = collect(ds)
    assert ids_of(batches) == [list(range(i, min(i + 5, 23))) for i in range(0, 23, 5)]
    last = batches[-1]
    assert last["id"].shape == (5,) and last[loader.EXAMPLE_MASK].tolist() == [True] * 3 + [False] * 2
    for b in batches:
        np.testing.assert_array_equal(b["feature"][:, 0], b["id"].astype(np.float32))


def test_resumed_iterator_yields_exactly_the_remaining_batches():
    ds = loader.batches(columns(), batch_size=4, seed=3, num_epochs=3, shard_index=0, shard_count=1)
    full = ids_of(collect(ds))
    it = iter(ds)
    seen = [next(it) for _ in range(7)]  # crosses the epoch boundary (5 batches per epoch)
    state = it.get_state()
    resumed = iter(ds)
    resumed.set_state(state)
    assert ids_of(seen) + ids_of(list(resumed)) == full


def test_resume_through_a_threaded_prefetching_iterator():
    ds = loader.batches(columns(50), batch_size=4, seed=1, num_epochs=2, shard_index=0, shard_count=1)
    full = ids_of(collect(ds))
    options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    it = iter(ds.to_iter_dataset(options))
    seen = [next(it) for _ in range(15)]
    resumed = iter(ds.to_iter_dataset(options))
    resumed.set_state(it.get_state())
    assert ids_of(seen) + ids_of(list(resumed)) == full


def test_infinite_epochs_resume_from_state():
    ds = loader.batches(columns(), batch_size=4, seed=5, num_epochs=None, shard_index=0, shard_count=1)
    it = iter(ds)
    reference = [next(it)["id"].tolist() for _ in range(12)]
    again = iter(ds)
    for _ in range(9):
        next(again)
    resumed = iter(ds)
    resumed.set_state(again.get_state())
    assert [next(resumed)["id"].tolist() for _ in range(3)] == reference[9:]


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_two_processes_get_disjoint_complete_equal_shards(drop_remainder):
    shards = [
        collect(loader.batches(columns(), batch_size=6, seed=2, num_epochs=2, drop_remainder=drop_remainder,
                               shard_index=s, shard_count=2))
        for s in range(2)
    ]
    assert len(shards[0]) == len(shards[1])
    per_epoch = len(shards[0]) // 2
    for epoch in range(2):
        got = [sum(ids_of(shard[epoch * per_epoch : (epoch + 1) * per_epoch]), []) for shard in shards]
        assert not set(got[0]) & set(got[1])
        union = sorted(got[0] + got[1])
        if drop_remainder:
            assert len(union) == 18 and len(set(union)) == 18
        else:
            assert union == list(range(23))
    for a, b in zip(*shards):
        assert a["id"].shape == b["id"].shape == (3,)


def test_shards_interleave_the_single_process_global_batches():
    single = ids_of(collect(loader.batches(columns(), batch_size=6, seed=4, shard_index=0, shard_count=1)))
    halves = [ids_of(collect(loader.batches(columns(), batch_size=6, seed=4, shard_index=s, shard_count=2)))
              for s in range(2)]
    for whole, a, b in zip(single, *halves):
        assert sorted(whole) == sorted(a + b)


def test_buckets_pad_rows_to_static_bounds():
    lengths = [1, 5, 3, 7, 2, 8, 4, 6, 2, 3]
    rows = [{"tokens": np.arange(1, n + 1), "length": np.int32(n)} for n in lengths]
    buckets = loader.Buckets(lengths=lengths, bounds=[4, 8], pad_values={"tokens": 0})
    ds = loader.batches(rows, batch_size=2, seed=0, drop_remainder=False, buckets=buckets, shard_index=0, shard_count=1)
    seen = []
    for batch in ds:
        width = batch["tokens"].shape[1]
        assert width in (4, 8)
        for tokens, n, real in zip(batch["tokens"], batch["length"], batch[loader.EXAMPLE_MASK]):
            assert n <= width and (width == 4 or n > 4)
            np.testing.assert_array_equal(tokens, np.r_[np.arange(1, n + 1), np.zeros(width - n, int)])
            if real:
                seen.append(int(n))
    assert sorted(seen) == sorted(lengths)


def test_buckets_left_pad_prompts():
    lengths = [2, 5, 1, 3]
    rows = [{"prompt": np.arange(1, n + 1), "mask": np.ones(n, bool)} for n in lengths]
    buckets = loader.Buckets(lengths=lengths, bounds=[3, 6], pad_values={"prompt": 0, "mask": False},
                             left_padded=["prompt", "mask"])
    ds = loader.batches(rows, batch_size=1, shuffle=False, buckets=buckets, shard_index=0, shard_count=1)
    got = [(b["prompt"][0].tolist(), b["mask"][0].tolist()) for b in ds]
    assert got == [  # unshuffled: record order within each bucket, bucket after bucket
        ([0, 1, 2], [False, True, True]),
        ([0, 0, 1], [False, False, True]),
        ([1, 2, 3], [True] * 3),
        ([0, 1, 2, 3, 4, 5], [False] + [True] * 5),
    ]


def test_buckets_cut_padded_columns():
    history = np.full((6, 10), -1, np.int32)
    lengths = [1, 2, 9, 3, 10, 2]
    for row, n in zip(history, lengths):
        row[:n] = 7
    buckets = loader.Buckets(lengths=lengths, bounds=[3, 10], pad_values={"history": -1})
    records = {"history": history, "n": np.asarray(lengths)}
    ds = loader.batches(records, batch_size=2, shuffle=False, buckets=buckets, shard_index=0, shard_count=1)
    shapes = [(b["history"].shape, b["n"].tolist()) for b in ds]
    assert shapes == [((2, 3), [1, 2]), ((2, 3), [3, 2]), ((2, 10), [9, 10])]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="multiple of shard_count"):
        loader.batches(columns(), batch_size=5, shard_index=0, shard_count=2)
    with pytest.raises(ValueError, match="no full batch"):
        loader.batches(columns(3), batch_size=4, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="largest bucket bound"):
        loader.batches(columns(3), batch_size=1, shard_index=0, shard_count=1,
                       buckets=loader.Buckets(lengths=[1, 9, 2], bounds=[4], pad_values={}))


def test_default_shard_is_this_jax_process():
    batches = collect(loader.batches(columns(), batch_size=4, seed=0))
    assert len(batches) == 5 and batches[0]["id"].shape == (4,)


def test_split_records_bucketed_by_history_length():
    rows = [(u, list(range(1, n + 1)), 0) for u, n in enumerate([1, 4, 2, 3, 1, 4, 2, 3])]
    records = loader.split_records(Split.from_rows(rows, max_history=4))
    buckets = loader.Buckets(lengths=records["history_len"], bounds=[2, 4], pad_values={"history": -1})
    seen = []
    for batch in loader.batches(records, batch_size=2, seed=0, buckets=buckets, shard_index=0, shard_count=1):
        width = batch["history"].shape[1]
        assert np.all((batch["history_len"] <= 2) == (width == 2))
        for history, n in zip(batch["history"], batch["history_len"]):
            assert history.tolist() == list(range(1, n + 1)) + [-1] * (width - n)
        seen += batch["users"].tolist()
    assert sorted(seen) == list(range(8))
