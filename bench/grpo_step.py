"""One GRPO step, sidjax vs. transformers' PyTorch, on the same model and the same work.

The work: B prompts x G sampled completions of T tokens (temperature 1, no early
stop, so both sides decode exactly T tokens), a reward per completion, group
advantages, then one policy update: policy + frozen-reference log-probs, clipped
ratio loss with a k3 KL term, backward, AdamW.

sidjax: `make_grpo_step` (rollout via `sidjax.decode.sample.generate`, rewards,
advantages, reference log-probs and the update in one jitted program).
PyTorch: `model.generate(do_sample=True, num_return_sequences=G)` then the same
loss written in torch, on the same weights (exported with `save_pretrained`).
The rollouts of the two sides alternate (bench.harness), then the whole steps do, for
`--repeats` rounds each after a warm-up; compile time of ours is reported apart.

`--dtype` is the compute dtype of both sides (parameters stay float32): sidjax's `model.dtype`,
PyTorch under `torch.autocast("cpu", dtype=torch.bfloat16)` for bfloat16. `auto` (the default) is
what `model.dtype = "auto"` picks on this machine, as the pipeline's GRPO stage runs: bfloat16 where
the CPU has native bf16 dot products, float32 elsewhere.

    python -m bench.grpo_step [--prompts 4 --group 16 --prompt_len 96 --new_tokens 48 --repeats 5 --threads 1
                               --dtype auto]

Then each side's rollout and step as FLOP/s and as a share of its framework's matmul peak measured
in the same run (bench.peaks): how much of a ratio target the hardware leaves room for.
Last lines: rollout_speedup=<ratio of the rollouts' medians>, then the whole step's result and
speedup=<PyTorch median step time / sidjax median step time>.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile

from bench import harness

harness.threads_before_jax()  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from bench import peaks  # noqa: E402
from sidjax.configs import base_config  # noqa: E402
from sidjax.decode.beam import TrieTables  # noqa: E402
from sidjax.decode.sample import SamplingParams, generate  # noqa: E402
from sidjax.model.config import ModelConfig, preset  # noqa: E402
from sidjax.model.hf import save_pretrained  # noqa: E402
from sidjax.model.transformer import CausalLM  # noqa: E402
from sidjax.sid.codes import SidTrie  # noqa: E402
from sidjax.train import grpo  # noqa: E402
from sidjax.train.state import make_train_state  # noqa: E402
from sidjax.utils.settings import settings_from  # noqa: E402

TEXT_VOCAB = 4096
LEVELS, CODES, ITEMS = 3, 256, 2000
THINK_END = 7


def sampling(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                          no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=args.group)


def sidjax_rollout(model, args, prompts):
    """A call sampling G completions of every prompt (compiled at the first call)."""
    graphdef = nnx.graphdef(model)
    arrays = nnx.state(model)
    mask = jnp.ones(prompts.shape, bool)
    rollout = jax.jit(lambda arrays, rng: generate(nnx.merge(graphdef, arrays), jnp.asarray(prompts), mask,
                                                   sampling(args), rng=rng, pad_id=0).tokens)
    seeds = itertools.count(1)
    return lambda: jax.block_until_ready(rollout(arrays, jax.random.key(next(seeds))))


def sidjax_step(model, args, prompts, targets, tables):
    """A call of the whole jitted GRPO step; it trains the model's arrays (donated), so run it after the rollouts."""
    section = base_config().grpo
    section.unlock()
    section.group_size = args.group
    section.mode = "reasoning"
    section.rollout = "sample"
    settings = settings_from(grpo.GrpoSettings, section, think_end_id=THINK_END)
    state = make_train_state(model, section, total_steps=10)
    ref = jax.tree.map(jnp.copy, state.model_arrays())
    step = grpo.make_grpo_step(state.graphdef, state.wrt, grpo.sample_rollout(sampling(args), pad_id=0), settings)
    mask = jnp.ones(prompts.shape, bool)
    arrays, seeds = state.arrays, itertools.count(1)

    def call():
        nonlocal arrays
        inputs = grpo.StepInputs(jnp.asarray(prompts), mask, jnp.asarray(targets), jax.random.key(next(seeds)))
        arrays, metrics = jax.block_until_ready(step(arrays, ref, inputs, tables))
        return metrics

    return call


def torch_side(hf_dir, args, prompts, target_tokens):
    """(rollout call, whole-step call) of the PyTorch reference."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    policy = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    ref.eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5, weight_decay=0.0)
    gen_config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                  num_return_sequences=args.group, max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens, pad_token_id=0, eos_token_id=None)
    input_ids = torch.from_numpy(prompts.astype(np.int64))
    attention = torch.ones_like(input_ids)
    g, p = args.group, prompts.shape[1]

    def compute():
        """The forward passes in the step's dtype (autocast keeps the weights, the optimizer and the loss in f32)."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    targets = torch.from_numpy(np.repeat(target_tokens, g, axis=0).astype(np.int64))

    def rollout():
        with torch.no_grad(), compute():
            policy.eval()
            return policy.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen_config)

    def token_logprobs(m, seqs):
        with compute():
            logits = m(input_ids=seqs).logits[:, p - 1:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, seqs[:, p:, None])[..., 0]

    def step():
        seqs = rollout()
        completion = seqs[:, p:]
        # Prefix reward on the SID after </think> (same definition as sidjax's `prefix` component).
        after = torch.cumsum((completion == THINK_END).long(), 1) > 0
        start_pos = torch.argmax((after & (completion >= TEXT_VOCAB) & (completion < TEXT_VOCAB + CODES)).long(), 1)
        idx = start_pos[:, None] + torch.arange(LEVELS)[None]
        sid = completion.gather(1, idx.clamp(max=completion.shape[1] - 1))
        matched = torch.cumprod((sid == targets).long(), 1).sum(1)
        rewards = torch.tensor([0.0, 0.25, 0.5, 1.0])[matched]
        grouped = rewards.view(-1, g)
        adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-6)).view(-1)
        policy.train()
        with torch.no_grad():
            ref_lp = token_logprobs(ref, seqs)
        lp = token_logprobs(policy, seqs)
        ratio = torch.exp(lp - lp.detach())
        obj = torch.minimum(ratio * adv[:, None], torch.clamp(ratio, 0.8, 1.2) * adv[:, None])
        delta = ref_lp - lp
        loss = (-obj + 1e-3 * (torch.exp(delta) - delta - 1)).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        loss.item()

    torch.manual_seed(0)
    return rollout, step


def work_flops(config: ModelConfig, args: argparse.Namespace) -> tuple[float, float]:
    """(rollout, whole step) matmul FLOPs: each prompt once per group, each sampled token once per row.

    The step then scores the same tokens with the frozen reference (a forward) and the policy (forward
    + backward: 3 forwards), as sidjax does; PyTorch also runs every prompt once per
    row, which is its own extra work and not counted.
    """
    prompt_tokens, sampled_tokens = args.prompts * args.prompt_len, args.prompts * args.group * args.new_tokens
    context = args.prompt_len + args.new_tokens / 2
    rollout = peaks.lm_forward_flops(config, context) * (prompt_tokens + sampled_tokens)
    return rollout, 5 * rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--prompt_len", type=int, default=96)
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--repeats", type=harness.repeat_count, default=harness.MIN_REPEATS,
                        help="timed rollouts and steps per side")
    harness.add_dtype_arg(parser, "compute dtype")
    harness.add_threads_arg(parser)
    args = parser.parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    args.dtype = harness.chosen_dtype(args.dtype)

    rng = np.random.default_rng(0)
    vocab = TEXT_VOCAB + LEVELS * CODES
    model = CausalLM(dataclasses.replace(preset("demo", vocab), dtype=args.dtype), rngs=nnx.Rngs(0))
    offsets = TEXT_VOCAB + CODES * np.arange(LEVELS)
    sids = rng.integers(0, CODES, (ITEMS, LEVELS))
    tables = TrieTables.from_trie(SidTrie.build(sids, (CODES,) * LEVELS), offsets)
    prompts = rng.integers(8, TEXT_VOCAB, (args.prompts, args.prompt_len)).astype(np.int32)
    targets = sids[rng.integers(0, ITEMS, args.prompts)].astype(np.int32)
    print(f"model: demo preset, {model.config.num_params() / 1e6:.1f}M params, vocab {vocab}; "
          f"B={args.prompts} prompts x G={args.group} samples, prompt {args.prompt_len} + {args.new_tokens} new tokens, "
          f"dtype {args.dtype}")

    with tempfile.TemporaryDirectory() as hf_dir:
        save_pretrained(model, hf_dir)  # before sidjax's step donates the weights' buffers
        torch_rollout, torch_step = torch_side(hf_dir, args, prompts, targets + offsets)
        ours_rollout = sidjax_rollout(model, args, prompts)
        _, rollout_compile = harness.timed(ours_rollout)
        rollouts = harness.measure("rollout", "sidjax", ours_rollout, "pytorch", torch_rollout, repeats=args.repeats)
        print(harness.report(rollouts))
        ours_step = sidjax_step(model, args, prompts, targets, tables)
        metrics, step_compile = harness.timed(ours_step)
        print(f"sidjax compile: rollout {rollout_compile:.1f}s, step {step_compile:.1f}s "
              f"(kl {float(metrics['kl']):.2e})", flush=True)
        steps = harness.measure("grpo_step", "sidjax", ours_step, "pytorch", torch_step, repeats=args.repeats)
    measured_peaks = peaks.matmul_peaks(args.dtype)
    print(peaks.describe_peaks(measured_peaks))
    rollout_flops, step_flops = work_flops(model.config, args)
    peaks.print_shares("rollout", rollouts, rollout_flops, measured_peaks, args.dtype)
    peaks.print_shares("step   ", steps, step_flops, measured_peaks, args.dtype)
    print(f"rollout_speedup={rollouts.ratio:.2f}")
    harness.finish(steps)


if __name__ == "__main__":
    main()
