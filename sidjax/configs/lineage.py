"""The knobs every model stage section has: which model it continues and the seed of its lineage.

A model stage entry (`sft`, `reason_sft`, `grpo`, `sdpo`, any of them tagged, e.g. `sft:b`)
continues the model of the entry named in `init_from`, or builds a fresh one from `config.model`
when that is "". Its seed is `config.seed + seed_offset`, so a second model of an ensemble
(`config.entries["sft:b"] = {"seed_offset": 1}`) starts from other random weights and data order.
"""
import ml_collections

from sidjax.configs.rules import require


def add_lineage_knobs(c: ml_collections.ConfigDict, init_from: str) -> None:
    c.init_from = init_from  # the model stage entry whose output model this stage continues; "": a fresh model
    c.seed_offset = 0  # this stage runs with seed config.seed + seed_offset


def validate_lineage(c: ml_collections.ConfigDict, name: str) -> None:
    require(c.seed_offset >= 0, f"{name}.seed_offset", f"must be >= 0, got {c.seed_offset}")
