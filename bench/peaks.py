"""How near the hardware a timed call runs: its FLOPs against the matmul peak measured in the same run.

A ratio to PyTorch says nothing of what is left to gain: when both sides already run near this
machine's matmul peak, no speedup target above peak / theirs can be met on it. So the scripts with a
speed target print each side's achieved FLOP/s as a share of the best square matmul each framework
reaches here, in the call's dtype, timed interleaved with the same repeats (bench.harness).

The counts are matmul FLOPs (2 per multiply-add) of the work itself, nothing a framework adds: a
sampled group's shared prompt counts once, the first layer's input gradient (of data) not at all.
Elementwise work (norms, softmax, the optimizer) is left out, so a share near 100 % means the call is
bound by its matmuls.

Import after `harness.threads_before_jax()`, like jax.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import torch

from bench import harness
from sidjax.model.config import ModelConfig


SQUARE = 1024  # the peak's matmul is SQUARE x SQUARE by SQUARE x SQUARE


def matmul_peaks(dtype: str, repeats: int = harness.MIN_REPEATS) -> dict[str, float]:
    """Best square-matmul FLOP/s on this machine: XLA in float32 and in bfloat16 (float32 accumulation),
    and PyTorch in `dtype`; interleaved, so load hits them alike."""
    xla_mm = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    n = SQUARE
    xla_inputs = {name: jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(name)) for name in harness.DTYPES}
    torch_input = torch.randn(n, n, dtype=getattr(torch, dtype))
    calls = {f"XLA {name}": (lambda x=x: xla_mm(x).block_until_ready()) for name, x in xla_inputs.items()}
    calls[f"PyTorch {dtype}"] = lambda: torch_input @ torch_input
    times = harness.interleave(*calls.values(), repeats=repeats)
    return {name: 2 * n ** 3 / min(seconds) for name, seconds in zip(calls, times)}


def describe_peaks(measured: dict[str, float]) -> str:
    """The line that says which peaks the shares below it divide by."""
    peaks = ", ".join(f"{name} {flop_s / 1e9:.1f} GFLOP/s" for name, flop_s in measured.items())
    return f"matmul peak ({SQUARE}^3): {peaks}"


def share_of_peak(flops: float, seconds: float, measured: dict[str, float], peak_name: str) -> str:
    """'<GFLOP/s> GFLOP/s (<share> of the <peak_name> matmul peak)' for work of `flops` done in `seconds`."""
    achieved = flops / seconds
    return f"{achieved / 1e9:6.1f} GFLOP/s ({achieved / measured[peak_name]:.0%} of the {peak_name} matmul peak)"


def print_shares(label: str, comparison: harness.Comparison, flops: float, measured: dict[str, float],
                 dtype: str) -> None:
    """A line per side: its median time for `flops` of work, as FLOP/s and as a share of its own peak."""
    for name, seconds, peak_name in ((comparison.a_name, comparison.a.median, f"XLA {dtype}"),
                                     (comparison.b_name, comparison.b.median, f"PyTorch {dtype}")):
        print(f"{label} {name:8s} median {seconds * 1e3:8.1f} ms  " + share_of_peak(flops, seconds, measured, peak_name),
              flush=True)


def lm_forward_flops(config: ModelConfig, context: float) -> float:
    """Matmul FLOPs of one token's forward pass through a CausalLM that attends to `context` positions.

    Every projection and the output layer (the input embedding is a gather, not a matmul); attention's
    scores and values over `context` positions.
    """
    e, h, k, d, f = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim,
                     config.intermediate_size)
    projections = config.num_layers * (e * (h + 2 * k) * d + h * d * e + 3 * e * f) + config.vocab_size * e
    attention = 2 * 2 * config.num_layers * context * config.num_heads * config.head_dim
    return 2 * projections + attention


def beam_search_flops(config: ModelConfig, prompt_lengths: Sequence[int], beams: int, levels: int) -> float:
    """Matmul FLOPs of a constrained beam search's work: each prompt once, then `beams` rows per SID level.

    Each prompt's tokens go through the body once (token t attends to t positions; padding is not
    work), its last token through the output layer too (the first level's scores); each later
    level runs `beams` rows through the whole model, attending to the prompt and the SID tokens
    before. A search that expands every prompt to its beams first (transformers' `generate`)
    does that prefill `beams` times: its own extra work, not counted.
    """
    output_layer = 2 * config.vocab_size * config.hidden_size
    total = 0.0
    for n in prompt_lengths:
        total += sum(lm_forward_flops(config, t) - output_layer for t in range(1, n + 1)) + output_layer
        total += beams * sum(lm_forward_flops(config, n + level) for level in range(1, levels))
    return total


def mlp_train_flops(sizes: Sequence[int], data_input: bool) -> float:
    """Matmul FLOPs of one row through an MLP of these layer sizes, forward and backward.

    Forward 2 per weight, the weight gradient 2, the input gradient 2 except at a first layer whose
    input is data (`data_input`): no gradient flows there.
    """
    weights = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 6 * sum(weights) - (2 * weights[0] if data_input else 0)
