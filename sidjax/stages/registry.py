"""Every stage by name: `run(ctx: StageContext) -> dict` imported from its own module."""
from __future__ import annotations

from typing import Any, Callable

from sidjax.stages import baselines, data, eval, rl, sft, sids, teacher
from sidjax.stages.context import MODEL_STAGES, StageContext

STAGES: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "data": data.run,
    "sids": sids.run,
    "teacher": teacher.run,
    "sft": sft.run_alignment,
    "reason_sft": sft.run_reasoning,
    "grpo": rl.run_grpo,
    "sdpo": rl.run_sdpo,
    "eval": eval.run,
    "sasrec": baselines.run_sasrec,
    "markov": baselines.run_markov,
    "baselines": baselines.run,
}

__all__ = ["MODEL_STAGES", "STAGES"]
