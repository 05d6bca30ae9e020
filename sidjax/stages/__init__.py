"""The pipeline's stages: one module per stage, registered in `registry.STAGES`, run by `runner.run_pipeline`.

A stage entry in `config.stages` is `name` or `name:tag` (e.g. `eval:sft`); the tag only
names the entry, so one stage can run several times. What an entry uses is its own setting,
the stage's section overridden by `config.entries[<entry>]` (`sidjax.configs`):

    model stages (sft, reason_sft, grpo, sdpo)  `init_from`: the model stage entry it continues, "" = a
                                                fresh model; `seed_offset`: it runs with config.seed + offset
    eval                                        `models`: the entries it scores (two or more: one ensemble);
                                                `rescore` / `rescore_weights`: the sasrec / markov entries
                                                that re-score the beams; `mode`: direct or reasoning
    baselines                                   scores the run's first sasrec / markov entry, if any

An entry may use only entries listed before it (`entries.check`, at launch).
"""
from sidjax.stages.context import DONE, StageContext, parse_stage, stage_dirname
from sidjax.stages.registry import MODEL_STAGES, STAGES
from sidjax.stages.runner import run_pipeline

__all__ = ["DONE", "MODEL_STAGES", "STAGES", "StageContext", "parse_stage", "run_pipeline", "stage_dirname"]
