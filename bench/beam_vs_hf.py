"""Constrained SID beam search: sidjax vs. transformers' `generate(num_beams=B, prefix_allowed_tokens_fn=trie)`.

The same weights (a small random Qwen3-style model, exported with sidjax.model.hf and
loaded by transformers), the same Industrial_and_Scientific test prompts (the shipped
data, the papers' SIDs, the next-SID prompt of sidjax.data.tasks), beam 10 and 50;
users/s of each in one run, and a check that both return the same top-B SIDs. The
PyTorch side evaluates the way the papers' code does: left-padded batches, beams
expanded from the prompt, log-softmax over the vocabulary, the trie as a
prefix_allowed_tokens_fn, length penalty 0. Each side's timed run decodes all the users (the
model loaded and the trie's allowed-token table built before, once); the two sides alternate
(bench.harness) for `--repeats` rounds after a warm-up. Compile time of ours is reported apart.
Both sides compute in float32 by default (`--dtype`, also `bfloat16` or `auto`), the one dtype where
their top-B lists can be identical; in bfloat16 (PyTorch under autocast) the agreement line says how
far rounding moved them. Each side's median is also printed as FLOP/s of the search's own work
(bench.peaks.beam_search_flops: every prompt once) and as a share of its framework's matmul peak in
that dtype, measured in the same run.

    python -m bench.beam_vs_hf [--users 16] [--hf_batch 4] [--repeats 5] [--dtype float32] [--threads 1]

Last line: speedup=<transformers' median seconds over ours at beam 50>.
"""
from __future__ import annotations

import argparse
import tempfile

from bench import harness

harness.threads_before_jax()  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from bench import peaks  # noqa: E402

from sidjax.configs import base_config  # noqa: E402
from sidjax.data.formatting import ChatFormat  # noqa: E402
from sidjax.data.sources import load_dataset  # noqa: E402
from sidjax.data.tasks import sid_history_prompt, sid_strings  # noqa: E402
from sidjax.decode.beam import TrieTables, beam_search  # noqa: E402
from sidjax.decode.sample import pad_prompts  # noqa: E402
from sidjax.model import hf, tokenizer as bpe, vocab  # noqa: E402
from sidjax.model.config import preset  # noqa: E402
from sidjax.model.transformer import CausalLM  # noqa: E402
from sidjax.sid.codes import SidTrie, index_to_sids  # noqa: E402


def build(users: int, dtype: str):
    dataset = load_dataset(base_config().data)
    sids = index_to_sids(dataset.paper_sids, dataset.num_items)
    level_sizes = (256,) * sids.shape[1]
    tokenizer = bpe.train_bpe(bpe.item_texts(dataset.items), vocab_size=4096)
    offsets = vocab.add_sid_tokens(tokenizer, level_sizes)
    fmt = ChatFormat(tokenizer, eos_token=bpe.EOS_TOKEN, chat_template=bpe.CHAT_TEMPLATE)
    num_tokens = vocab.padded_size(tokenizer.get_vocab_size(with_added_tokens=True), 128)
    # A larger init spread than training's 0.02 so random SID scores are well separated (no near-ties).
    config = preset("demo", num_tokens).replace(initializer_range=0.2, dtype=dtype)
    model = CausalLM(config, rngs=nnx.Rngs(0))
    test = dataset.splits["test"]
    item_sids = sid_strings(sids)
    prompts = fmt.prompt_ids([sid_history_prompt([item_sids[i] for i in h]) for h in test.histories()[:users]])
    trie = SidTrie.build(sids, level_sizes)
    return model, tokenizer, fmt, trie, offsets, prompts


def ours(model, tables, prompts, beams, batch):
    """A call decoding every user: codes [n, B, L], scores [n, B]."""
    tokens, mask = pad_prompts(prompts, bucket=32, pad_id=0)

    def run():
        out = []
        for start in range(0, len(prompts), batch):
            result = beam_search(model, tokens[start:start + batch], mask[start:start + batch], tables,
                                 num_beams=beams, normalize="vocab")
            out.append(jax.device_get((result.codes, result.scores)))
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    return run


def allowed_next(trie, offsets) -> dict[tuple, list[int]]:
    """The trie as transformers needs it: generated prefix (token ids) -> allowed next token ids."""
    allowed = {}
    for sid in trie.leaf_sids.tolist():
        tokens = [int(offsets[l]) + c for l, c in enumerate(sid)]
        for l in range(trie.num_levels):
            allowed.setdefault(tuple(tokens[:l]), set()).add(tokens[l])
    return {k: sorted(v) for k, v in allowed.items()}


def transformers_beam(model, allowed, num_levels, offsets, prompts, beams, batch, dtype):
    """A call of transformers' generate with the trie as prefix_allowed_tokens_fn: codes [n, B, L], scores."""
    from transformers import GenerationConfig

    gen_config = GenerationConfig(num_beams=beams, num_return_sequences=beams, max_new_tokens=num_levels,
                                  min_new_tokens=num_levels, do_sample=False, length_penalty=0.0,
                                  early_stopping=False, output_scores=True, return_dict_in_generate=True,
                                  pad_token_id=0, eos_token_id=None, bos_token_id=None)

    def run():
        torch.manual_seed(0)
        codes, scores = [], []
        for start in range(0, len(prompts), batch):
            tokens, mask = pad_prompts(prompts[start:start + batch], bucket=1, pad_id=0)
            width = tokens.shape[1]

            def prefix_allowed(_, ids, width=width):
                return allowed.get(tuple(ids[width:].tolist()), [])

            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                out = model.generate(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                                     attention_mask=torch.from_numpy(mask.astype(np.int64)),
                                     generation_config=gen_config, prefix_allowed_tokens_fn=prefix_allowed)
            generated = out.sequences[:, width:].numpy().reshape(len(tokens), beams, num_levels)
            codes.append(generated - np.asarray(offsets)[None, None, :])
            scores.append(out.sequences_scores.numpy().reshape(len(tokens), beams))
        return np.concatenate(codes), np.concatenate(scores)

    return run


def last_result(run):
    """`run` and a getter of what its latest call returned (the timing loop drops results)."""
    latest = []

    def call():
        latest[:] = [run()]

    return call, lambda: latest[0]


def top_b_agreement(ours_out, hf_out) -> str:
    """How far the two sides' top-B lists agree (the timings compare the same decoding)."""
    (codes, scores), (hf_codes, hf_scores) = ours_out, hf_out
    same = float(np.mean([(a == b).all() for a, b in zip(codes, hf_codes)]))
    same_sets = float(np.mean([{tuple(r) for r in a} == {tuple(r) for r in b} for a, b in zip(codes, hf_codes)]))
    diff = float(np.abs(scores - hf_scores).max())
    return f"same top-B order {same:.0%}, same top-B set {same_sets:.0%}, max score diff {diff:.1e}"


def compare(beams: int, model, tables, torch_model, trie, offsets, prompts, args) -> harness.Comparison:
    """Both sides at one beam width, interleaved; prints users/s and whether their top-B agree."""
    ours_run, ours_out = last_result(ours(model, tables, prompts, beams, args.batch))
    hf_run, hf_out = last_result(transformers_beam(torch_model, allowed_next(trie, offsets), trie.num_levels, offsets,
                                                   prompts, beams, args.hf_batch, args.dtype))
    _, compiled = harness.timed(ours_run)
    c = harness.measure(f"beam{beams}", "sidjax", ours_run, "transformers", hf_run, repeats=args.repeats)
    print(f"beam {beams:>2}: sidjax {args.users / c.a.median:8.2f} users/s (compile {compiled:.1f}s) | "
          f"transformers {args.users / c.b.median:7.2f} users/s | ratio {c.ratio:6.1f}x | "
          f"{top_b_agreement(ours_out(), hf_out())}", flush=True)
    return c


def main() -> None:
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="test users per measurement")
    parser.add_argument("--batch", type=int, default=16, help="users per sidjax search call")
    parser.add_argument("--hf_batch", type=int, default=4, help="users per transformers generate call")
    parser.add_argument("--repeats", type=harness.repeat_count, default=harness.MIN_REPEATS,
                        help="timed runs per side and beam width")
    # float32 by default: the one dtype where the two sides' top-B lists can be identical.
    harness.add_dtype_arg(parser, "compute dtype (PyTorch under autocast for bfloat16)", default="float32")
    harness.add_threads_arg(parser)
    args = parser.parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    args.dtype = harness.chosen_dtype(args.dtype)
    model, tokenizer, _, trie, offsets, prompts = build(args.users, args.dtype)
    tables = TrieTables.from_trie(trie, offsets)
    print(f"model: {model.config.num_params() / 1e6:.1f}M params, vocab {model.config.vocab_size}; "
          f"{args.users} test users, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens; "
          f"{trie.num_leaves} SIDs, {trie.branching[0]} first-level codes; devices: {jax.devices()[0].platform}")
    with tempfile.TemporaryDirectory() as model_dir:
        hf.save_pretrained(model, model_dir, tokenizer, bpe.tokenizer_config())
        torch_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        by_width = {beams: compare(beams, model, tables, torch_model, trie, offsets, prompts, args) for beams in (10, 50)}
        print(harness.report(by_width[10]))
    measured_peaks = peaks.matmul_peaks(args.dtype)
    print(peaks.describe_peaks(measured_peaks))
    for beams, comparison in by_width.items():
        flops = peaks.beam_search_flops(model.config, [len(p) for p in prompts], beams, trie.num_levels)
        peaks.print_shares(f"beam {beams:>2}", comparison, flops, measured_peaks, args.dtype)
    harness.finish(by_width[50])


if __name__ == "__main__":
    main()
