"""Stage `teacher`: write the enrichment / reasoning corpus (tasks 7, 8, stage 2) into the stage dir.

Reads the SIDs of the `sids` stage. `teacher.kind = "offline"` writes template
text with no network; `"openai"` asks an OpenAI-compatible server, resuming
from its answer cache when rerun after an interruption (SIGKILL, or SIGTERM, which
stops it at once: `sidjax.stages.preemption`) or a spent budget; nothing is written
to the stage dir but the cache until the whole corpus is there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from sidjax.data.corpus import write_corpus
from sidjax.data.dataset import RecDataset
from sidjax.data.tasks import sid_strings
from sidjax.stages.context import StageContext
from sidjax.stages.preemption import sigterm_stops
from sidjax.stages.settings import config_key
from sidjax.stages.sids import SIDS_FILE
from sidjax.teacher.offline import write_offline
from sidjax.teacher.prompts import Bounds
from sidjax.utils.files import read_npy
from sidjax.utils.settings import settings_from

CACHE_FILE = "cache.jsonl"


def _subset(n: int, cap: int, rng: np.random.Generator) -> list[int]:
    if cap < 0 or cap >= n:
        return list(range(n))
    return sorted(rng.choice(n, size=cap, replace=False).tolist())


def coverage(dataset: RecDataset, c: ml_collections.ConfigDict) -> tuple[list[int], list[tuple[str, int]]]:
    """The item ids and (split, row) samples the corpus covers (seeded subsets when capped)."""
    items = _subset(dataset.num_items, c.max_items, np.random.default_rng([c.seed, 0]))
    users = []
    for k, split in enumerate(c.user_splits, 1):
        rows = _subset(len(dataset.splits[split]), c.max_users, np.random.default_rng([c.seed, k]))
        users.extend((split, r) for r in rows)
    return items, users


def run(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config.teacher
    dataset = ctx.dataset
    sids = read_npy(ctx.output_of("sids") / SIDS_FILE)
    if sids.shape[0] != dataset.num_items:
        raise ValueError(f"the sids stage's sids.npy has {sids.shape[0]} rows but the dataset has {dataset.num_items} items")
    item_sids = sid_strings(sids)
    item_ids, user_rows = coverage(dataset, c)
    logging.info("teacher (%s): %d items, %d user samples", c.kind, len(item_ids), len(user_rows))
    manifest: dict[str, Any] = {"teacher": c.kind, "template": c.kind == "offline"}
    kept = ("every answer bought so far is in its answer cache" if c.kind == "openai"
            else "the offline teacher writes the same texts again")
    with sigterm_stops(ctx.spec, kept):
        items, users, usage = _write_texts(ctx, dataset, item_sids, item_ids, user_rows)
    if c.kind == "openai":
        manifest.update(model=c.model, base_url=c.base_url)
    counts = write_corpus(ctx.dir, items, users, manifest)
    return {
        **manifest,
        **counts,
        "requested_items": len(item_ids),
        "requested_users": len(user_rows),
        **{f"usage_{k}": v for k, v in usage.items()},
    }


def _write_texts(ctx: StageContext, dataset: RecDataset, item_sids: list[str], item_ids: list[int],
                 user_rows: list[tuple[str, int]]) -> tuple[list, list, dict[str, Any]]:
    """The item and user texts of the configured teacher, and its usage (requests, tokens, cache hits)."""
    c = ctx.config.teacher
    if c.kind == "offline":
        items, users = write_offline(dataset, item_sids, item_ids, user_rows, explain_target=c.explain_target)
        usage: dict[str, Any] = {}
    else:
        from sidjax.teacher.client import BudgetExceeded, ClientSettings, ResponseCache, TeacherClient, TeacherError
        from sidjax.teacher.llm import write_llm

        cache = ResponseCache(Path(c.cache_path) if c.cache_path else ctx.dir / CACHE_FILE)
        with config_key("teacher.api_key_env", TeacherError):
            client = TeacherClient(settings_from(ClientSettings, c), cache)
        try:
            items, users = write_llm(client, dataset, item_sids, item_ids, user_rows, Bounds(c.min_chars, c.max_chars),
                                     explain_target=c.explain_target)
        except BudgetExceeded as e:
            raise BudgetExceeded(f"config key 'teacher.{e.setting}': {e}", e.setting) from e
        finally:
            client.close()
            cache.close()
        usage = dict(vars(client.usage))
        logging.info("teacher usage: %s", usage)
    return items, users, usage
