"""Train-step throughput: sidjax CausalLM vs. transformers' PyTorch Qwen3 of the same config and batch.

One step = forward + backward + SGD update on next-token cross-entropy. Steps of the two
frameworks alternate, so machine load hits both alike; the median step time of each is
reported as tokens/s, as achieved FLOP/s, and as a fraction of the matmul FLOP/s this
machine reaches in the same run (a jitted square float32 matmul). Last line:
`speedup=<sidjax tokens/s / PyTorch tokens/s>`.

    python -m bench.lm_step [--batch 8 --length 256 --chunk 0 --attention einsum --steps 6]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from flax import nnx

from sidjax.model import hf
from sidjax.model.config import ModelConfig
from sidjax.model.transformer import CausalLM
from sidjax.train.losses import hidden_token_logprobs


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--chunk", type=int, default=0, help="cross-entropy chunk (0: full-vocab logits at once)")
    p.add_argument("--attention", default="einsum", choices=("einsum", "xla"))
    p.add_argument("--steps", type=int, default=6)
    return p.parse_args()


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                       num_kv_heads=2, head_dim=args.hidden // 4, intermediate_size=3 * args.hidden,
                       rope_theta=1e6, qk_norm=True, tie_word_embeddings=True, attention_impl=args.attention,
                       max_position_embeddings=args.length)


def train_flops(config: ModelConfig, batch: int, length: int) -> float:
    """6 x matmul parameters (output layer included) + causal-unaware attention scores/values, per step."""
    matmul_params = config.num_params() - config.vocab_size * config.hidden_size * (not config.tie_word_embeddings)
    matmul_params -= config.num_layers * (2 * config.hidden_size + 2 * config.head_dim) + config.hidden_size
    attention = 2 * 2 * config.num_layers * length * config.num_heads * config.head_dim  # per token, forward
    return 3 * (2 * matmul_params + attention) * batch * length


def matmul_flops_per_s(n: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Measured float32 matmul FLOP/s of XLA and of PyTorch on this machine (best of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    ta = torch.randn(n, n)
    best_jax, best_torch = float("inf"), float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a).block_until_ready()
        best_jax = min(best_jax, time.perf_counter() - t)
        t = time.perf_counter()
        ta @ ta
        best_torch = min(best_torch, time.perf_counter() - t)
    return 2 * n ** 3 / best_jax, 2 * n ** 3 / best_torch


def sidjax_step(config: ModelConfig, chunk: int, lr: float):
    model = CausalLM(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.sgd(lr)

    def loss_fn(params, tokens):
        model = nnx.merge(graphdef, params)
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1] - 1), (tokens.shape[0], tokens.shape[1] - 1))
        hidden, _ = model.hidden_states(tokens[:, :-1], positions)
        scores = hidden_token_logprobs(hidden, tokens[:, 1:], model.logits, chunk_size=chunk)
        return -jnp.mean(scores.logprobs)

    def step(params, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, _ = tx.update(grads, tx.init(params))
        return optax.apply_updates(params, updates), loss

    return model, params, jax.jit(step, donate_argnums=0)


def torch_model(model: CausalLM, directory: str) -> torch.nn.Module:
    """The same weights in transformers' Qwen3ForCausalLM (exported and reloaded)."""
    hf.save_pretrained(model, directory)
    return transformers.AutoModelForCausalLM.from_pretrained(directory).train()


def main() -> None:
    args = parse_args()
    config = model_config(args)
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, args.length + 1))
    jax_tokens = jnp.asarray(tokens, jnp.int32)
    lr = 1e-3
    model, params, step = sidjax_step(config, args.chunk, lr)
    with tempfile.TemporaryDirectory() as directory:
        reference = torch_model(model, directory)
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr)
    torch_tokens = torch.tensor(tokens)

    def torch_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        logits = reference(input_ids=torch_tokens[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size), torch_tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        return loss.item()

    # Same loss at the start: the two steps compute the same thing.
    params, first = step(params, jax_tokens)
    with torch.no_grad():
        logits = reference(input_ids=torch_tokens[:, :-1]).logits
        ref_loss = float(torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size),
                                                           torch_tokens[:, 1:].reshape(-1)))
    print(f"initial loss: sidjax {float(first):.5f}  pytorch {ref_loss:.5f}")
    torch_step()
    jax_times, torch_times = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        params, loss = step(params, jax_tokens)
        loss.block_until_ready()
        jax_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch_step()
        torch_times.append(time.perf_counter() - t)

    n_tokens = args.batch * args.length
    flops = train_flops(config, args.batch, args.length)
    peak_jax, peak_torch = matmul_flops_per_s()
    jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
    print(f"config: {config.num_params() / 1e6:.2f}M params, vocab {config.vocab_size}, batch {args.batch}x"
          f"{args.length}, attention {args.attention}, CE chunk {args.chunk}, torch threads {torch.get_num_threads()}")
    print(f"matmul peak (1024^3 f32): XLA {peak_jax / 1e9:.1f} GFLOP/s, PyTorch {peak_torch / 1e9:.1f} GFLOP/s")
    for name, seconds, peak in (("sidjax", jax_s, peak_jax), ("pytorch", torch_s, peak_torch)):
        achieved = flops / seconds
        print(f"{name:8s} step {seconds * 1e3:8.1f} ms  {n_tokens / seconds:9.0f} tokens/s  "
              f"{achieved / 1e9:6.1f} GFLOP/s  ({achieved / peak:.0%} of its matmul peak)")
    print(f"speedup={torch_s / jax_s:.3f}")


if __name__ == "__main__":
    main()
