"""The knobs every model stage section has: which model it continues, the seed of its lineage, its remat.

A model stage entry (`sft`, `reason_sft`, `grpo`, `sdpo`, any of them tagged, e.g. `sft:b`)
continues the model of the entry named in `init_from`, or builds a fresh one from `config.model`
when that is "". Its seed is `config.seed + seed_offset`, so a second model of an ensemble
(`config.entries["sft:b"] = {"seed_offset": 1}`) starts from other random weights and data order.
Its `remat` (what each layer keeps for the backward pass) is its own where set, else `config.mesh.remat`:
stages of one run differ in memory (an SFT on short sequences fits without remat, and runs faster
so, beside an RL stage that needs it).
"""
import ml_collections

from sidjax.configs.rules import require


def add_lineage_knobs(c: ml_collections.ConfigDict, init_from: str) -> None:
    c.init_from = init_from  # the model stage entry whose output model this stage continues; "": a fresh model
    c.seed_offset = 0  # this stage runs with seed config.seed + seed_offset
    c.remat = ""  # none | dots | full for this stage's training (sidjax.parallel.memory); "": config.mesh.remat


def validate_lineage(c: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.model.config import REMAT

    require(c.seed_offset >= 0, f"{name}.seed_offset", f"must be >= 0, got {c.seed_offset}")
    require(c.remat in ("",) + REMAT, f"{name}.remat",
            f"must be one of {REMAT} or '' (config.mesh.remat), got '{c.remat}'")


def stage_remat(config: ml_collections.ConfigDict, stage: str) -> str:
    """The remat model stage `stage` (a section name: sft, reason_sft, grpo, sdpo) trains with."""
    return config[stage].remat or config.mesh.remat
