"""Verifiable rewards over generated Semantic IDs, computed in-graph from token ids.

Every function is pure and jittable with static shapes, so rewards run inside the
same compiled GRPO step as the rollout (no decoding to text, no host round trip).
Rollouts are flattened groups: row `b * G + g` is completion `g` of prompt `b`,
and for beam rollouts `g` is the beam's rank.

Reward definitions follow the papers:
- SIDReasoner: hierarchical prefix credit (0.25 / 0.5 / 1.0 for 1 / 2 / all levels)
  plus a bonus when the SID names a real item; 0 when the `</think>` format breaks.
- MiniOneRec: exact match, and a rank penalty where a wrong beam at rank i gets
  -(1/log2(i+2)) / sum_j 1/log2(j+2), only in groups that contain the target.
- GREAM: residual-sensitive levels (0.5, 0.707, 0.866, 0.95 for 1..4 matched
  leading levels, 1.0 for all), i.e. credit grows like sqrt(matched / 4).
- search (ours): the reasoning-mode eval's NDCG of the target in the SID search that follows the
  thought, 1 / log2(rank + 2), 0 outside the R beams or without `</think>`. The sampled answer is one
  SID; the eval ranks R of them after the thought, so this credits a thought by what the eval scores.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from sidjax.decode.beam import TrieTables
from sidjax.sid.codes import leaf_ids

REWARD_COMPONENTS = ("prefix", "exact", "rank", "gream", "search")


class ParsedSid(NamedTuple):
    """The SID read out of completions: codes int32[N, L] (-1 where absent) and well-formedness."""

    codes: jax.Array
    well_formed: jax.Array  # bool[N]: a full SID, after `</think>` in reasoning mode


def parse_sid(tokens: jax.Array, mask: jax.Array, tables: TrieTables, think_end_id: int | None) -> ParsedSid:
    """Read the L SID tokens of each completion.

    tokens/mask: int32/bool [N, T], the generated tokens only. The SID starts at
    the first first-level SID token (after the first `</think>` when `think_end_id`
    is given, i.e. reasoning mode; text such as newlines may sit in between) and
    must continue with one in-block token per level.
    """
    num_levels = tables.num_levels
    n, t = tokens.shape
    offsets = tables.level_offsets
    first_level = (tokens >= offsets[0]) & (tokens < offsets[0] + tables.level_sizes[0]) & mask
    if think_end_id is None:
        after_marker = jnp.ones((n, t), bool)
    else:
        after_marker = jnp.cumsum((tokens == think_end_id) & mask, axis=1) > 0
    candidates = first_level & after_marker
    has_start = candidates.any(axis=1)
    start = jnp.argmax(candidates, axis=1).astype(jnp.int32)
    positions = start[:, None] + jnp.arange(num_levels, dtype=jnp.int32)[None, :]
    in_range = positions < t
    safe = jnp.minimum(positions, t - 1)
    sid_tokens = jnp.take_along_axis(tokens, safe, axis=1)
    sid_valid = jnp.take_along_axis(mask, safe, axis=1) & in_range
    codes = sid_tokens - offsets[None, :].astype(sid_tokens.dtype)
    in_level = (codes >= 0) & (codes < jnp.asarray(tables.level_sizes)[None, :]) & sid_valid
    well_formed = has_start & in_level.all(axis=1)
    return ParsedSid(jnp.where(in_level, codes, -1).astype(jnp.int32), well_formed)


def matched_prefix_levels(codes: jax.Array, target_codes: jax.Array) -> jax.Array:
    """int32[N]: how many leading SID levels equal the target's (0..L)."""
    equal = codes == target_codes
    return jnp.cumprod(equal.astype(jnp.int32), axis=1).sum(axis=1)


def prefix_schedule(matched: jax.Array, num_levels: int, partial_credit: Sequence[float]) -> jax.Array:
    """f32[N]: 1.0 for a full match, partial_credit[m-1] for m < L matched levels, 0 for none.

    Levels beyond the schedule's length reuse its last entry (GREAM caps at 0.95).
    """
    table = jnp.asarray([0.0, *partial_credit], jnp.float32)
    partial = table[jnp.minimum(matched, len(partial_credit))]
    return jnp.where(matched >= num_levels, 1.0, partial)


def hierarchical_reward(
    matched: jax.Array,
    well_formed: jax.Array,
    real_item: jax.Array,
    num_levels: int,
    partial_credit: Sequence[float],
    real_item_bonus: float,
) -> jax.Array:
    """SIDReasoner's reward: prefix credit + bonus for a real item; 0 when the format is broken."""
    reward = prefix_schedule(matched, num_levels, partial_credit) + real_item_bonus * real_item
    return jnp.where(well_formed, reward, 0.0)


def exact_match(matched: jax.Array, well_formed: jax.Array, num_levels: int) -> jax.Array:
    """f32[N]: 1 when the whole SID equals the target's."""
    return ((matched >= num_levels) & well_formed).astype(jnp.float32)


def rank_discounts(ranks: int) -> jax.Array:
    """f32[ranks]: 1 / log2(rank + 2), the NDCG weight of each rank (best first)."""
    return 1.0 / jnp.log2(jnp.arange(ranks, dtype=jnp.float32) + 2.0)


def closed_thoughts(tokens: jax.Array, mask: jax.Array, think_end_id: int) -> jax.Array:
    """bool[N]: the completion wrote `</think>` (`think_end_id`) among its tokens."""
    return ((tokens == think_end_id) & mask).any(axis=1)


def rank_penalty(hit: jax.Array, group_size: int) -> jax.Array:
    """MiniOneRec's ranking reward over rank-ordered groups (beams).

    In a group that contains the target, a wrong completion at rank i gets
    -(1/log2(i+2)) / sum_j 1/log2(j+2) and the hit gets 0; groups without the
    target get 0 everywhere (no signal to rank by).
    """
    hit = hit.reshape(-1, group_size)
    discount = rank_discounts(group_size)
    penalty = -discount / discount.sum()
    group_has_hit = hit.any(axis=1, keepdims=True)
    reward = jnp.where(hit, 0.0, penalty[None, :]) * group_has_hit
    return reward.reshape(-1)


def search_credit(searched: jax.Array, target_codes: jax.Array, closed: jax.Array) -> jax.Array:
    """f32[N]: 1 / log2(rank + 2) where the target is beam `rank` of `searched` (int32[N, R, L], best first),
    0 where it is not there or the thought is not `closed`."""
    found = (searched == target_codes[:, None, :]).all(axis=-1)  # beams are distinct SIDs: at most one
    return jnp.where(closed, jnp.max(found * rank_discounts(searched.shape[1]), axis=1), 0.0)


class Rewards(NamedTuple):
    total: jax.Array  # f32[N], the weighted sum the advantages are computed from
    components: dict[str, jax.Array]  # name -> f32[N], unweighted
    hit: jax.Array  # bool[N], exact match with a well-formed SID
    well_formed: jax.Array  # bool[N]


def compute_rewards(
    tokens: jax.Array,
    mask: jax.Array,
    target_codes: jax.Array,
    *,
    tables: TrieTables,
    think_end_id: int | None,
    group_size: int,
    weights: Mapping[str, float],
    prefix_credit: Sequence[float],
    real_item_bonus: float,
    gream_credit: Sequence[float],
    searched: jax.Array | None = None,
    history: jax.Array | None = None,
) -> Rewards:
    """All reward components for flattened groups and their weighted total.

    target_codes: int32[N, L], the target item's SID repeated per completion. searched: the SID search
    after each thought (`search_credit`; reasoning mode), None where the rollout did not search.
    history: int32[N, H, L], the SID tokens of each completion's history items (-1 pads); where given, a
    SID that repeats one of them earns no prefix / gream credit unless it is the target (a copied item
    of the right category would otherwise be paid without being a hit).
    Components with weight 0 are still computed (they are cheap) so they can be logged; `search`
    is 0 without a search.
    """
    unknown = set(weights) - set(REWARD_COMPONENTS)
    if unknown:
        raise ValueError(f"unknown reward components {sorted(unknown)} (known: {REWARD_COMPONENTS})")
    if weights.get("search", 0.0) and (searched is None or think_end_id is None):
        raise ValueError("the 'search' reward needs a reasoning-mode rollout that searches after each thought "
                         "(sample_rollout with a ThoughtSearch)")
    num_levels = tables.num_levels
    parsed = parse_sid(tokens, mask, tables, think_end_id)
    matched = jnp.where(parsed.well_formed, matched_prefix_levels(parsed.codes, target_codes), 0)
    real = (leaf_ids(tables.codes, tables.next_node, parsed.codes) >= 0) & parsed.well_formed
    hit = (matched >= num_levels) & parsed.well_formed
    if history is not None:
        history_codes = history - tables.level_offsets.astype(history.dtype)
        copied = ((parsed.codes[:, None, :] == history_codes) & (history >= 0)).all(axis=-1).any(axis=-1)
        matched = jnp.where(copied & ~hit, 0, matched)
    components = {
        "prefix": hierarchical_reward(matched, parsed.well_formed, real, num_levels, prefix_credit, real_item_bonus),
        "exact": exact_match(matched, parsed.well_formed, num_levels),
        "rank": rank_penalty(hit, group_size),
        "gream": jnp.where(parsed.well_formed, prefix_schedule(matched, num_levels, gream_credit), 0.0),
        "search": jnp.zeros(tokens.shape[0], jnp.float32),
    }
    if searched is not None and think_end_id is not None:
        components["search"] = search_credit(searched, target_codes, closed_thoughts(tokens, mask, think_end_id))
    total = sum(weights.get(name, 0.0) * value for name, value in components.items())
    return Rewards(total.astype(jnp.float32), components, hit, parsed.well_formed)
