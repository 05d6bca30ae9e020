"""Which compute dtype `"auto"` means on this machine: bfloat16 where the hardware runs it fast, else float32.

bfloat16 compute with float32 master weights (`param_dtype`) halves the activation traffic and, on
hardware with bf16 matrix units, runs matmuls about twice as fast; softmax, norms, logits, losses and
the optimizer state stay float32 either way (`sidjax.model.transformer`, `sidjax.train`). On a CPU
without bf16 instructions (AVX2 only) XLA emulates bf16 and it is slower than float32, so the choice
follows the hardware:

* backend tpu: bfloat16;
* backend gpu: bfloat16 (float32 on a CUDA GPU older than compute capability 8.0, which has no bf16 units);
* backend cpu: bfloat16 when /proc/cpuinfo lists `avx512_bf16` or `amx_bf16`, float32 otherwise (and
  where the flags cannot be read: not Linux, not x86).

`resolve_dtype` is called once where a model (or the RQ-VAE) is built, so configs may say "auto" but
no `ModelConfig` ever holds it; it logs the choice and why.
"""
from __future__ import annotations

import jax
from absl import logging

from sidjax.utils import cpuinfo

AUTO = "auto"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 dot products (AVX512-BF16, AMX)
CPUINFO = cpuinfo.CPUINFO


def cpu_flags(path: str | None = None) -> frozenset[str] | None:
    """The CPU's feature flags (of `path`, default /proc/cpuinfo); None where unreadable."""
    text = cpuinfo.read(path or CPUINFO)
    return None if text is None else cpuinfo.flags(text)


def _gpu_capability() -> float | None:
    """The first GPU's CUDA compute capability (e.g. 8.0), None where jax does not say (ROCm, ...)."""
    try:
        return float(jax.devices()[0].compute_capability)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None


def backend() -> str:
    """jax's default backend: cpu | gpu | tpu | ..."""
    return jax.default_backend()


def auto_dtype() -> tuple[str, str]:
    """(dtype, reason): what "auto" means on this machine's default jax backend."""
    backend_name = backend()
    if backend_name == "tpu":
        return "bfloat16", "backend tpu"
    if backend_name in ("gpu", "cuda", "rocm"):
        capability = _gpu_capability()
        if capability is not None and capability < 8.0:
            return "float32", f"backend gpu of compute capability {capability:g} < 8.0 (no bf16 units)"
        return "bfloat16", f"backend {backend_name}"
    if backend_name != "cpu":
        return "float32", f"backend {backend_name} (not known to run bf16 fast)"
    flags = cpu_flags()
    if flags is None:
        return "float32", f"backend cpu, CPU flags unreadable ({CPUINFO}: not Linux / x86?)"
    fast = sorted(flags.intersection(BF16_CPU_FLAGS))
    if fast:
        return "bfloat16", f"backend cpu with {' and '.join(fast)}"
    return "float32", f"backend cpu without {' or '.join(BF16_CPU_FLAGS)} (bf16 would be emulated, slower)"


def resolve_dtype(dtype: str, what: str = "model") -> str:
    """`dtype` itself, or for "auto" the dtype this machine runs fast (logged with the reason)."""
    if dtype != AUTO:
        return dtype
    chosen, reason = auto_dtype()
    logging.info("%s compute dtype 'auto' -> %s: %s", what, chosen, reason)
    return chosen
