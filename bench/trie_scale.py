"""Constrained decoding at catalogue scale: the memory of sidjax's trie tables and the constraint's cost per step.

A synthetic catalogue of `--items` distinct random SIDs (`--levels` levels of `--codes` codes each,
numpy seeded) is built into `SidTrie` / `TrieTables`, the tables `sidjax.decode.beam` indexes.
Memory: the bytes of those device tables (per level `codes` and `next_node`), and apart the host-side
leaf tables that map results back to items.

Cost: one beam-`--beams` decode step of a small sidjax CausalLM at the LAST SID level (the largest
table), the way `sidjax.decode.beam` runs a level: each beam's previous SID token through the KV cache
over its prompt's shared prefix, log-softmax over the vocabulary, the level's code block, then top-B;
constrained (a beam's allowed codes and their next nodes looked up in the trie, top-B over beams x
allowed codes) against the same step unconstrained (top-B over beams x the level's whole code block).
The bench composes the step from sidjax's own pieces; a run first checks that its constrained steps
return what `beam_search` returns. The two steps alternate (bench.harness).

Anchor (the STATIC paper): a vectorised trie costs 0.25 % of inference and about 90 MB per 1M items.
Target here: overhead below 5 % of a decode step.

    python -m bench.trie_scale [--items 1000000 --levels 3 --codes 256 --beams 50 --users 4 --repeats 30
                                --threads 1]

Last lines: `overhead=<pct>%` (constrained median over unconstrained median, minus 1), the comparison,
and `speedup=<unconstrained median / constrained median>` (1.0: the constraint costs nothing).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools

from bench import harness

harness.threads_before_jax(torch_too=False)  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from sidjax.decode.beam import TrieTables, _level_logprobs, beam_search  # noqa: E402
from sidjax.model import vocab  # noqa: E402
from sidjax.model.config import PRESETS, preset  # noqa: E402
from sidjax.model.transformer import CausalLM, KVCache, positions_from_mask  # noqa: E402
from sidjax.sid.codes import SidTrie  # noqa: E402

TEXT_VOCAB = 1024
MB = 1e6


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000, help="distinct SIDs in the catalogue")
    p.add_argument("--levels", type=int, default=3, choices=(3, 4))
    p.add_argument("--codes", type=int, default=256, help="codes per level")
    p.add_argument("--beams", type=int, default=50)
    p.add_argument("--users", type=int, default=4, help="prompts decoded together")
    p.add_argument("--prompt_len", type=int, default=64)
    p.add_argument("--preset", default="small", choices=PRESETS,
                   help="sidjax model preset (small: width 128, 4 layers)")
    p.add_argument("--repeats", type=harness.repeat_count, default=30, help="timed steps per side")
    p.add_argument("--seed", type=int, default=0)
    harness.add_threads_arg(p)
    return p.parse_args()


def random_sids(items: int, levels: int, codes: int, seed: int) -> np.ndarray:
    """int32 [items, levels]: distinct SIDs drawn uniformly from the codes**levels code space."""
    space = codes ** levels
    if items > space:
        raise ValueError(f"{items} distinct SIDs do not fit {levels} levels of {codes} codes ({space} SIDs)")
    flat = np.random.default_rng(seed).choice(space, items, replace=False)
    digits = [(flat // codes ** (levels - 1 - level)) % codes for level in range(levels)]
    return np.stack(digits, axis=1).astype(np.int32)


def table_bytes(tables: TrieTables) -> int:
    """Bytes constrained decoding holds on the device: every level's `codes` and `next_node`, the offsets."""
    return sum(a.nbytes for a in (*tables.codes, *tables.next_node, tables.level_offsets))


def host_bytes(trie: SidTrie) -> int:
    """Bytes of the host-side leaf tables (results -> items), not needed while decoding."""
    return trie.leaf_sids.nbytes + trie.leaf_items.nbytes + trie.item_leaf.nbytes


def overhead_pct(constrained_s: float, unconstrained_s: float) -> float:
    return (constrained_s / unconstrained_s - 1) * 100


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Beams:
    """The search after some levels, as `sidjax.decode.beam._search` carries it from level to level."""

    scores: jax.Array  # float32 [B, R]
    valid: jax.Array  # bool [B, R]
    node: jax.Array  # int32 [B, R] trie node each beam sits on
    codes: jax.Array  # int32 [B, R, levels so far]
    cache: KVCache  # the beams' own SID tokens (B*R rows)
    next_position: jax.Array  # int32 [B] position of the first SID token


def first_level(model: CausalLM, tokens: jax.Array, mask: jax.Array, tables: TrieTables,
                beams: int) -> tuple[KVCache, Beams]:
    """Prefill the prompts once (their cache is the beams' shared prefix) and pick level 0 from the root."""
    b, t = tokens.shape
    hidden, prefix = model.hidden_states(tokens, positions_from_mask(mask), attention_mask=mask,
                                         cache=model.init_cache(b, t))
    pad = max(beams - tables.codes[0].shape[1], 0)
    root_codes = jnp.pad(tables.codes[0][0], (0, pad), constant_values=-1)
    root_next = jnp.pad(tables.next_node[0][0], (0, pad), constant_values=-1)
    logp = _level_logprobs(model, hidden[:, -1], tables, 0, "vocab")
    ok = root_codes >= 0
    scores, pick = jax.lax.top_k(jnp.where(ok, logp[:, jnp.maximum(root_codes, 0)], -jnp.inf), beams)
    return prefix, Beams(scores=scores, valid=ok[pick], node=root_next[pick], codes=root_codes[pick][..., None],
                         cache=model.init_cache(b * beams, max(tables.num_levels - 1, 1)),
                         next_position=mask.sum(axis=-1).astype(jnp.int32))


def constrained_pick(beams: Beams, logp: jax.Array, tables: TrieTables, level: int):
    """Top-B over each beam's allowed codes (the trie's lookups): scores, parent beam, valid, code, node."""
    b, r = beams.scores.shape
    safe_node = jnp.maximum(beams.node, 0)
    child_codes = tables.codes[level][safe_node]  # [B, R, B_l]
    child_next = tables.next_node[level][safe_node]
    ok = (child_codes >= 0) & beams.valid[..., None]
    child_logp = jnp.take_along_axis(logp, jnp.maximum(child_codes, 0), axis=-1)
    cand = jnp.where(ok, beams.scores[..., None] + child_logp, -jnp.inf)
    width = child_codes.shape[-1]
    scores, pick = jax.lax.top_k(cand.reshape(b, r * width), r)
    valid = jnp.take_along_axis(ok.reshape(b, -1), pick, axis=1)
    code = jnp.take_along_axis(child_codes.reshape(b, -1), pick, axis=1)
    node = jnp.take_along_axis(child_next.reshape(b, -1), pick, axis=1)
    return scores, pick // width, valid, code, node


def unconstrained_pick(beams: Beams, logp: jax.Array, tables: TrieTables, level: int):
    """Top-B over every code of the level's block: no trie, so no node to follow."""
    b, r, width = logp.shape
    cand = jnp.where(beams.valid[..., None], beams.scores[..., None] + logp, -jnp.inf)
    scores, pick = jax.lax.top_k(cand.reshape(b, r * width), r)
    parent = pick // width
    return scores, parent, jnp.take_along_axis(beams.valid, parent, axis=1), pick % width, beams.node


def next_level(model: CausalLM, prefix: KVCache, beams: Beams, tables: TrieTables, level: int,
               constrained: bool) -> Beams:
    """One decode step: the beams' previous SID tokens through the model, then the level's top-B."""
    b, r = beams.scores.shape
    prev = tables.level_offsets[level - 1] + jnp.maximum(beams.codes[..., -1], 0)
    positions = jnp.repeat(beams.next_position + (level - 1), r)[:, None]
    hidden, cache = model.hidden_states(prev.reshape(b * r, 1), positions, cache=beams.cache, prefix=prefix)
    logp = _level_logprobs(model, hidden[:, 0], tables, level, "vocab").reshape(b, r, -1)
    pick = constrained_pick if constrained else unconstrained_pick
    scores, parent, valid, code, node = pick(beams, logp, tables, level)
    codes = jnp.concatenate([jnp.take_along_axis(beams.codes, parent[..., None], axis=1), code[..., None]], axis=-1)
    if level < tables.num_levels - 1:
        cache = cache.take_rows((jnp.arange(b)[:, None] * r + parent).reshape(-1))
    return dataclasses.replace(beams, scores=scores, valid=valid, node=node, codes=codes, cache=cache)


@functools.partial(jax.jit, static_argnames=("graphdef", "beams"))
def _first_level(graphdef, state, tokens, mask, tables, *, beams):
    return first_level(nnx.merge(graphdef, state), tokens, mask, tables, beams)


@functools.partial(jax.jit, static_argnames=("graphdef", "level", "constrained"))
def _next_level(graphdef, state, prefix, beams, tables, *, level, constrained):
    return next_level(nnx.merge(graphdef, state), prefix, beams, tables, level, constrained)


def before_last_level(model: CausalLM, tokens: jax.Array, mask: jax.Array, tables: TrieTables,
                      beams: int) -> tuple[KVCache, Beams]:
    """The constrained search run up to (not through) its last level."""
    graphdef, state = nnx.split(model)
    prefix, carry = _first_level(graphdef, state, tokens, mask, tables, beams=beams)
    for level in range(1, tables.num_levels - 1):
        carry = _next_level(graphdef, state, prefix, carry, tables, level=level, constrained=True)
    return prefix, carry


def check_against_beam_search(model: CausalLM, tokens: jax.Array, mask: jax.Array, tables: TrieTables,
                              prefix: KVCache, carry: Beams) -> None:
    """The composed constrained step must return sidjax's beam_search result (else the timing means nothing)."""
    graphdef, state = nnx.split(model)
    last = _next_level(graphdef, state, prefix, carry, tables, level=tables.num_levels - 1, constrained=True)
    ours = beam_search(model, tokens, mask, tables, num_beams=carry.scores.shape[1], normalize="vocab")
    codes = np.where(np.asarray(last.valid)[..., None], np.asarray(last.codes), -1)
    if not np.array_equal(codes, np.asarray(ours.codes)):
        raise SystemExit("the composed constrained step disagrees with sidjax.decode.beam.beam_search")
    print(f"check: the composed constrained step returns beam_search's top-{carry.scores.shape[1]} SIDs", flush=True)


def step_call(model: CausalLM, prefix: KVCache, carry: Beams, tables: TrieTables, constrained: bool):
    """A zero-argument call of the last level's step that blocks until done (the same inputs every time)."""
    graphdef, state = nnx.split(model)
    level = tables.num_levels - 1
    return lambda: jax.block_until_ready(
        _next_level(graphdef, state, prefix, carry, tables, level=level, constrained=constrained))


def build_tables(args: argparse.Namespace) -> TrieTables:
    """The catalogue's trie and its device tables, with the build times and the memory printed."""
    sids = random_sids(args.items, args.levels, args.codes, args.seed)
    trie, build_s = harness.timed(lambda: SidTrie.build(sids, (args.codes,) * args.levels))
    offsets = TEXT_VOCAB + args.codes * np.arange(args.levels)
    tables, upload_s = harness.timed(lambda: jax.block_until_ready(TrieTables.from_trie(trie, offsets)))
    print(f"catalogue: {args.items} distinct random SIDs, {args.levels} levels x {args.codes} codes; "
          f"SidTrie.build {build_s:.2f} s, to device {upload_s:.2f} s", flush=True)
    for level, (codes, nxt) in enumerate(zip(tables.codes, tables.next_node)):
        print(f"  level {level}: {codes.shape[0]} nodes x max branching {codes.shape[1]} "
              f"-> {(codes.nbytes + nxt.nbytes) / MB:.2f} MB")
    print(f"trie_tables_mb={table_bytes(tables) / MB:.2f} (device, used by decoding; "
          f"{table_bytes(tables) / MB * 1e6 / args.items:.1f} MB per 1M items; STATIC: ~90 MB per 1M)")
    print(f"host leaf tables: {host_bytes(trie) / MB:.2f} MB (results -> items; not read while decoding)", flush=True)
    return tables


def main() -> None:
    args = parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    tables = build_tables(args)
    num_tokens = vocab.padded_size(TEXT_VOCAB + args.levels * args.codes, 128)
    # A larger init spread than training's 0.02 so random scores are well separated (no near-ties).
    model = CausalLM(preset(args.preset, num_tokens).replace(initializer_range=0.2), rngs=nnx.Rngs(args.seed))
    rng = np.random.default_rng(args.seed)
    tokens = jnp.asarray(rng.integers(1, TEXT_VOCAB, (args.users, args.prompt_len)), jnp.int32)
    mask = jnp.ones(tokens.shape, bool)
    print(f"model: preset {args.preset}, {model.config.num_params() / 1e6:.2f}M params, vocab {num_tokens}; "
          f"{args.users} prompts x {args.prompt_len} tokens, beam {args.beams}; timed: the step at level "
          f"{args.levels - 1} (table {tables.codes[-1].shape[0]} x {tables.codes[-1].shape[1]})", flush=True)
    prefix, carry = before_last_level(model, tokens, mask, tables, args.beams)
    check_against_beam_search(model, tokens, mask, tables, prefix, carry)
    result = harness.measure(f"decode_step_beam{args.beams}", "constrained",
                             step_call(model, prefix, carry, tables, constrained=True), "unconstrained",
                             step_call(model, prefix, carry, tables, constrained=False), repeats=args.repeats)
    overhead = overhead_pct(result.a.median, result.b.median)
    print(f"overhead={overhead:.2f}% (constrained vs unconstrained median step; target < 5 %, STATIC 0.25 %)")
    harness.finish(result)


if __name__ == "__main__":
    main()
