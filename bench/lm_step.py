"""Train-step throughput: sidjax CausalLM vs. transformers' PyTorch Qwen3 of the same config and batch.

One step = forward + backward + SGD update on next-token cross-entropy, computed in `--dtype`
(bfloat16: sidjax's compute dtype with float32 parameters; PyTorch under
`torch.autocast("cpu", dtype=torch.bfloat16)`). Steps of the two frameworks alternate (bench.harness),
so machine load hits both alike; min / median / max step time of each are reported, and the median as
tokens/s, as achieved FLOP/s, and as a fraction of the matmul FLOP/s each framework reaches on this
machine in the same run and in the step's dtype (a jitted square matmul; bfloat16 accumulates in
float32). Last line: `speedup=<PyTorch median step time / sidjax median step time>`.

    python -m bench.lm_step [--batch 8 --length 256 --chunk 0 --attention einsum --steps 6 --dtype auto
                             --threads 0]

`--dtype auto` (the default) runs the dtype `model.dtype = "auto"` picks on this machine: bfloat16 where
the CPU has native bf16 dot products (AVX512_BF16, AMX), float32 elsewhere.
"""
from __future__ import annotations

import argparse
import tempfile

from bench import harness

harness.threads_before_jax()  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from bench import peaks  # noqa: E402
from sidjax.model import hf  # noqa: E402
from sidjax.model.config import ModelConfig  # noqa: E402
from sidjax.model.transformer import CausalLM  # noqa: E402
from sidjax.train.losses import hidden_token_logprobs  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--chunk", type=int, default=0, help="cross-entropy chunk (0: full-vocab logits at once)")
    p.add_argument("--attention", default="einsum", choices=("einsum", "xla"))
    harness.add_dtype_arg(p, "the step's compute dtype")
    p.add_argument("--steps", type=harness.repeat_count, default=6, help="timed steps per side")
    harness.add_threads_arg(p)
    return p.parse_args()


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                       num_kv_heads=2, head_dim=args.hidden // 4, intermediate_size=3 * args.hidden,
                       rope_theta=1e6, qk_norm=True, tie_word_embeddings=True, attention_impl=args.attention,
                       max_position_embeddings=args.length, dtype=args.dtype, param_dtype="float32")


def train_flops(config: ModelConfig, batch: int, length: int) -> float:
    """Forward + backward (3 x the forward's matmuls) of every position, attention causal-unaware."""
    return 3 * peaks.lm_forward_flops(config, length) * batch * length


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


def torch_loss(reference: torch.nn.Module, tokens: torch.Tensor, dtype: str) -> torch.Tensor:
    """Next-token cross-entropy, the forward under bfloat16 autocast when the step's dtype is bfloat16."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        logits = reference(input_ids=tokens[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def main() -> None:
    args = parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    args.dtype = harness.chosen_dtype(args.dtype)
    config = model_config(args)
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, args.length + 1))
    jax_tokens = jnp.asarray(tokens, jnp.int32)
    lr = 1e-3
    model, params, step = sidjax_step(config, args.chunk, lr)
    with tempfile.TemporaryDirectory() as directory:
        reference = torch_model(model, directory)
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr)
    torch_tokens = torch.tensor(tokens)

    def torch_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_loss(reference, torch_tokens, args.dtype)
        loss.backward()
        optimizer.step()
        loss.item()

    def sidjax_train_step() -> None:
        nonlocal params
        params, loss = step(params, jax_tokens)
        jax.block_until_ready((params, loss))

    # Same loss at the start: the two steps compute the same thing.
    params, first = step(params, jax_tokens)
    with torch.no_grad():
        ref_loss = float(torch_loss(reference, torch_tokens, args.dtype))
    print(f"initial loss ({args.dtype}): sidjax {float(first):.5f}  pytorch {ref_loss:.5f}", flush=True)
    result = harness.measure(f"train_step_{args.dtype}", "sidjax", sidjax_train_step, "pytorch", torch_step,
                             repeats=args.steps)

    n_tokens = args.batch * args.length
    flops = train_flops(config, args.batch, args.length)
    measured_peaks = peaks.matmul_peaks(args.dtype)
    print(f"config: {config.num_params() / 1e6:.2f}M params, vocab {config.vocab_size}, batch {args.batch}x"
          f"{args.length}, attention {args.attention}, CE chunk {args.chunk}, dtype {args.dtype}")
    print(peaks.describe_peaks(measured_peaks))
    print(f"tokens/s (median step): sidjax {n_tokens / result.a.median:.0f}, pytorch {n_tokens / result.b.median:.0f}")
    peaks.print_shares("step", result, flops, measured_peaks, args.dtype)
    harness.finish(result)


if __name__ == "__main__":
    main()
