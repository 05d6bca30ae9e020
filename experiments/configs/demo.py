"""The CPU demo: the shipped Industrial_and_Scientific data end to end, in minutes on 2 cores.

data → papers' SIDs → offline teacher corpus → alignment SFT → reasoning SFT → GRPO, with an eval
after each model stage and a reasoning-mode eval of the final model.
A tiny model trained from scratch with its own BPE tokenizer; every stage is cut short so
the whole run stays in minutes. It shows the pipeline working, not the papers' numbers
(see experiments/configs/industrial_scratch.py for a results run).
"""
from sidjax.configs import base_config

SFT_TASKS = ("sidhis2sid", "title2sid", "sid2title")


def get_config():
    config = base_config()
    config.name = "demo"
    # An eval after each model stage, so every stage's effect shows (GRPO: before and after on valid and test).
    # The final model is also evaluated in reasoning mode (the first 500 users: it thinks before every search),
    # which prints two examples and the reasoning measures (closure, loops, grounding, cited SIDs).
    config.stages = ("data", "sids", "teacher", "sft", "eval:sft", "reason_sft", "eval:reason_sft", "grpo", "eval",
                     "eval:reasoning")
    config.entries = {
        "eval:sft": {"models": ("sft",)},
        "eval:reason_sft": {"models": ("reason_sft",)},
        "eval:reasoning": {"models": ("grpo",), "mode": "reasoning", "max_users": 500},
    }

    config.sids.source = "paper"
    config.model.preset = "tiny"

    # Stage 1: the main task (SID history -> next SID) plus SID <-> title grounding.
    for task in config.sft.tasks.keys():
        config.sft.tasks[task] = -1 if task in SFT_TASKS else 0
    config.sft.length_buckets = (64, 128)
    config.sft.truncation = "drop"
    config.sft.max_steps = 1500
    config.sft.batch_size = 32
    config.sft.learning_rate = 3e-3
    config.sft.max_eval_batches = 20

    # Stage 2: <think> reasoning </think> SID, from the offline teacher's template reasoning, mixed one to one
    # with the main direct task so the stage keeps direct-mode accuracy (60 reasoning-only steps cost valid
    # NDCG@10 .0615 -> .0507; 300 mixed steps: .0608, on the same SFT model).
    config.reason_sft.length_buckets = (128, 256)
    config.reason_sft.truncation = "drop"
    config.reason_sft.tasks.sidhis2sid = -1
    config.reason_sft.max_steps = 300
    config.reason_sft.max_eval_batches = 10

    # Stage 3: GRPO on constrained-beam rollouts from the reasoning model, a few steps.
    config.grpo.init_from = "reason_sft"
    config.grpo.steps = 20
    config.grpo.batch_size = 16  # enough prompts per step that some groups disagree (a learning signal)
    config.grpo.group_size = 8
    config.grpo.reward_weights.rank = 1.0

    config.eval.models = ("grpo",)
    config.eval.splits = ("valid", "test")
    config.eval.beams = 20
    return config
