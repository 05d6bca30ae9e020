"""sidjax's own SFT step in bfloat16 against the same step in float32: does `model.dtype = "auto"` pay here?

The step is `sidjax.train.sft.make_train_step` (AdamW, dropout, the response window), on a model of
`industrial_scratch`'s shape by default (4 layers, width 192, vocabulary of about 1,300 tokens, batches
of 64 x 33), both sides from the same initial weights and on the same batch. Steps of the two dtypes
alternate (bench.harness). On an AVX2-only CPU bfloat16 is emulated and expected to lose; `auto`
picks float32 there.

    python -m bench.sft_dtype [--hidden 192 --layers 4 --batch 64 --length 33 --vocab 1300 --steps 9]

Last line: speedup=<float32 median step time / bfloat16 median step time>.
"""
from __future__ import annotations

import argparse

from bench import harness

harness.threads_before_jax(torch_too=False)  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from sidjax.configs import base_config  # noqa: E402
from sidjax.data.loader import EXAMPLE_MASK  # noqa: E402
from sidjax.model import precision  # noqa: E402
from sidjax.model.config import ModelConfig  # noqa: E402
from sidjax.model.transformer import CausalLM  # noqa: E402
from sidjax.train import sft  # noqa: E402
from sidjax.train.state import make_train_state  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--vocab", type=int, default=1300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=33)
    p.add_argument("--window", type=int, default=32, help="sft response window (0: logits on every position)")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--steps", type=harness.repeat_count, default=9, help="timed steps per side")
    harness.add_threads_arg(p)
    return p.parse_args()


def step_call(args: argparse.Namespace, dtype: str, batch: dict):
    """A call of one jitted SFT step in `dtype` (compiled and warmed by the harness's first round)."""
    config = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                         num_kv_heads=4, head_dim=args.hidden // 4, intermediate_size=args.intermediate,
                         dropout=args.dropout, dtype=dtype, param_dtype="float32", tie_word_embeddings=True)
    section = base_config().sft
    section.unlock()
    section.learning_rate, section.weight_decay, section.warmup_steps = 3e-3, 0.1, 100
    state = make_train_state(CausalLM(config, rngs=nnx.Rngs(0)), section, total_steps=1000)
    step = sft.make_train_step(state, response_window=args.window, seed=0)
    arrays = state.arrays

    def call() -> None:
        nonlocal arrays
        arrays, metrics = step(arrays, batch)
        jax.block_until_ready(metrics)

    return call


def main() -> None:
    args = parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    chosen, reason = precision.auto_dtype()
    print(f"model.dtype 'auto' here -> {chosen}: {reason}", flush=True)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.length)
    batch = {"tokens": rng.integers(0, args.vocab, shape).astype(np.int32), "attention_mask": np.ones(shape, bool),
             "loss_mask": np.ones(shape, bool), EXAMPLE_MASK: np.ones((args.batch,), bool)}
    print(f"sft step: {args.layers} layers, width {args.hidden}, vocab {args.vocab}, batch {args.batch}x{args.length}, "
          f"window {args.window}, dropout {args.dropout}", flush=True)
    result = harness.measure("sft_step_dtype", "bfloat16", step_call(args, "bfloat16", batch),
                             "float32", step_call(args, "float32", batch), repeats=args.steps)
    harness.finish(result)


if __name__ == "__main__":
    main()
