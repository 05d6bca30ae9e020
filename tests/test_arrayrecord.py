"""ArrayRecord shards: exact round trip, disjoint complete per-process files, use by the batch loader."""
import numpy as np
import pytest

from sidjax.data import arrayrecord, loader


def _examples(n=23):
    rng = np.random.default_rng(0)
    return [{"tokens": rng.integers(0, 1000, size=int(rng.integers(3, 12)), dtype=np.int32),
             "loss_mask": rng.random(5) < 0.5, "target": np.float32(i)} for i in range(n)]


def test_round_trip_keeps_order_values_dtypes_and_shapes(tmp_path):
    examples = _examples()
    written = arrayrecord.write_shards(examples, tmp_path / "train", num_shards=4)
    assert [p.name for p in written] == [f"train-0000{i}-of-00004.array_record" for i in range(4)]
    assert arrayrecord.find_shards(tmp_path / "train") == written
    source = arrayrecord.ExampleSource(written)
    assert len(source) == len(examples)
    for i in (0, 5, 22):
        got = source[i]
        assert set(got) == set(examples[i])
        for key, value in examples[i].items():
            assert np.asarray(got[key]).dtype == np.asarray(value).dtype
            np.testing.assert_array_equal(got[key], value)


def test_process_shards_are_disjoint_and_complete(tmp_path):
    paths = arrayrecord.write_columns({"id": np.arange(40, dtype=np.int64), "x": np.ones((40, 3), np.float32)},
                                      tmp_path / "valid", num_shards=4)
    seen = []
    for process in range(2):
        ds = arrayrecord.process_shard(paths, process, 2)
        ids = [int(ex["id"]) for ex in ds]
        assert len(ids) == 20
        seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(40))
    with pytest.raises(ValueError, match="dealt evenly to 3 processes"):
        arrayrecord.process_shard(paths, 0, 3)


def test_loader_reads_global_batches_from_shards(tmp_path):
    columns = {"tokens": np.arange(64, dtype=np.int32).reshape(16, 4)}
    paths = arrayrecord.write_columns(columns, tmp_path / "sft", num_shards=2)
    source = arrayrecord.ExampleSource(paths)
    rows = [next(iter(loader.batches(source, batch_size=8, seed=3, shard_index=p, shard_count=2)))
            for p in range(2)]
    want = next(iter(loader.batches(columns, batch_size=8, seed=3, shard_index=0, shard_count=1)))
    for process in range(2):  # each process keeps every 2nd row of the global batch
        np.testing.assert_array_equal(rows[process]["tokens"], want["tokens"][process::2])


def test_missing_shard_is_named(tmp_path):
    paths = arrayrecord.write_shards(_examples(6), tmp_path / "d", num_shards=3)
    paths[1].unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 shards are missing.*d-00001-of-00003"):
        arrayrecord.find_shards(tmp_path / "d")
