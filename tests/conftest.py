"""Tests run on the CPU, deterministically; tests needing 8 devices start their own subprocess."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Free every compiled executable after each test module.

    Each live XLA:CPU executable holds about six memory maps (measured: 200 small jitted functions,
    6.4 maps each, freed with them), and jit caches keep them as long as their functions live. A whole
    suite's worth in one process passed the kernel's `vm.max_map_count` (65,530), and XLA's compiler
    crashed with a segmentation fault at the next compile (tests/test_think.py, twice).
    """
    yield
    jax.clear_caches()
