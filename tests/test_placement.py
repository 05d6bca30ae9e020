"""put_batch: the one way a host batch reaches the devices (process-local rows, a global batch, or copies)."""
import numpy as np
import pytest

from sidjax.parallel.mesh import make_mesh
from sidjax.parallel.placement import batch_sharding, put_batch, replicated


def _batch():
    return {"tokens": np.arange(12, dtype=np.int32).reshape(4, 3), "mask": np.ones(4, bool)}


@pytest.mark.parametrize("rows", ["local", "global", "replicated"])
def test_put_batch_keeps_the_values_and_lays_rows_over_the_batch_axes(rows):
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    placed = put_batch(_batch(), mesh, rows)
    for key, host in _batch().items():
        np.testing.assert_array_equal(np.asarray(placed[key]), host)
        if rows == "replicated":
            assert placed[key].sharding == replicated(mesh)
        else:
            assert placed[key].sharding == batch_sharding(mesh, host.ndim)


def test_put_batch_without_a_mesh_is_a_device_put_and_rejects_unknown_layouts():
    placed = put_batch(_batch(), None)
    np.testing.assert_array_equal(np.asarray(placed["tokens"]), _batch()["tokens"])
    with pytest.raises(ValueError, match="rows must be"):
        put_batch(_batch(), None, "rows")
