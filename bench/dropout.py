"""sidjax's dropout (a random byte per element, four from each 32-bit draw) against a 32-bit draw per element.

The nine dropout sites of `industrial_scratch`'s SFT step (the embeddings and both residual branches
of its 4 layers, each [64, 33, 192] in bfloat16, rate 0.3), forward and backward under one jit. The
reference draws each keep decision with `jax.random.bernoulli`, a 32-bit threefry draw per element,
which is what `sidjax.model.dropout` replaced; the two sides alternate (bench.harness).

    python -m bench.dropout [--steps 9]

Last line: speedup=<reference median / sidjax median>.
"""
from __future__ import annotations

import argparse

from bench import harness

harness.threads_before_jax(torch_too=False)  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from sidjax.model.dropout import dropout  # noqa: E402

SITES, SHAPE, RATE = 9, (64, 33, 192), 0.3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=harness.repeat_count, default=9, help="timed calls per side")
    harness.add_threads_arg(p)
    return p.parse_args()


def bernoulli_dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


def sites_call(drop, x: jax.Array, key: jax.Array):
    """A call of the nine sites' masks, applied and differentiated (as a train step runs them)."""
    def loss(x, key):
        keys = jax.random.split(key, SITES)
        return sum(jnp.sum(drop(x * (i + 1), RATE, keys[i]).astype(jnp.float32)) for i in range(SITES))

    step = jax.jit(jax.value_and_grad(loss))

    def call() -> None:
        jax.block_until_ready(step(x, key))

    return call


def main() -> None:
    args = parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    x = jnp.ones(SHAPE, jnp.bfloat16)
    key = jax.random.key(0)
    print(f"{SITES} dropout sites of {SHAPE} bfloat16, rate {RATE}, forward and backward", flush=True)
    result = harness.measure("dropout", "sidjax", sites_call(dropout, x, key),
                             "bernoulli", sites_call(bernoulli_dropout, x, key), repeats=args.steps)
    harness.finish(result)


if __name__ == "__main__":
    main()
