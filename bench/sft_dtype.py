"""sidjax's own SFT step in bfloat16 against the same step in float32: does `model.dtype = "auto"` pay here?

The step is `sidjax.train.sft.make_train_step` (AdamW, dropout, the response window), on a model of
`industrial_scratch`'s shape by default (4 layers, width 192, vocabulary of about 1,300 tokens, batches
of 64 x 33), both sides from the same initial weights and on the same batch. Steps of the two dtypes
alternate (bench.harness). On an AVX2-only CPU bfloat16 is emulated and expected to lose; `auto`
picks float32 there.

    python -m bench.sft_dtype [--shape industrial_scratch | smollm2] [--steps 9]

`--shape smollm2`: SmolLM2-135M's architecture (30 layers, width 576, 9 / 3 heads, vocabulary 49,152 +
the 770 SID and think tokens, padded to 50,048; random weights: a step's cost does not depend on them) with
`industrial_smollm2`'s alignment-SFT step (16 sequences of 128 tokens, `sft.remat = "none"`, logits in
chunks of 256, no dropout, logits on every position).

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


# Each shape: the model and the step of a shipped config.
SHAPES = {
    "industrial_scratch": dict(model=dict(vocab_size=1300, hidden_size=192, num_layers=4, num_heads=4,
                                          num_kv_heads=4, head_dim=48, intermediate_size=768, dropout=0.3),
                               batch=64, length=33, window=32, logits_chunk=0),
    "smollm2": dict(model=dict(vocab_size=50048, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                               head_dim=64, intermediate_size=1536, rope_theta=100000.0, remat="none"),
                    batch=16, length=128, window=0, logits_chunk=256),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="industrial_scratch", choices=sorted(SHAPES))
    p.add_argument("--steps", type=harness.repeat_count, default=9, help="timed steps per side")
    harness.add_threads_arg(p)
    return p.parse_args()


def step_call(shape: dict, dtype: str, batch: dict):
    """A call of one jitted SFT step in `dtype` (compiled and warmed by the harness's first round)."""
    config = ModelConfig(**shape["model"], dtype=dtype, param_dtype="float32", tie_word_embeddings=True)
    section = base_config().sft
    section.unlock()
    section.learning_rate, section.weight_decay, section.warmup_steps = 3e-3, 0.1, 100
    state = make_train_state(CausalLM(config, rngs=nnx.Rngs(0)), section, total_steps=1000)
    step = sft.make_train_step(state, response_window=shape["window"], logits_chunk=shape["logits_chunk"], seed=0)
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
    shape = SHAPES[args.shape]
    rng = np.random.default_rng(0)
    rows = (shape["batch"], shape["length"])
    batch = {"tokens": rng.integers(0, shape["model"]["vocab_size"], rows).astype(np.int32),
             "attention_mask": np.ones(rows, bool), "loss_mask": np.ones(rows, bool),
             EXAMPLE_MASK: np.ones((shape["batch"],), bool)}
    print(f"sft step of {args.shape}: {shape}", flush=True)
    result = harness.measure("sft_step_dtype", "bfloat16", step_call(shape, "bfloat16", batch),
                             "float32", step_call(shape, "float32", batch), repeats=args.steps)
    harness.finish(result)


if __name__ == "__main__":
    main()
