"""Tests run on the CPU, deterministically; tests needing 8 devices start their own subprocess."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
