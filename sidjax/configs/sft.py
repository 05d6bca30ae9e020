"""`config.sft` (stage 1, alignment) and `config.reason_sft` (stage 2, reasoning activation).

Both sections share the trainer's knobs, the lineage knobs (`sidjax.configs.lineage`) and the
task-mixture knobs (`tasks.<task>` caps, `task_seed`, `replay_*`, `recent_train_samples`) that
`sidjax.data.tasks.TaskMixture` is filled from (`sidjax.utils.settings.settings_from`). The defaults
suit a small scratch model on the shipped data; a real run (Qwen3-1.7B on a pod)
raises `batch_size`, lowers `learning_rate` and sets `logits_chunk`. Each length
bucket compiles its own step: few buckets on a CPU, more where padding costs more.
"""
from pathlib import Path

import ml_collections

from sidjax.configs.domains import add_domains_knob, validate_domains
from sidjax.configs.lineage import add_lineage_knobs, validate_lineage
from sidjax.configs.optimizer import add_optimizer_knobs, validate_optimizer
from sidjax.configs.rules import require
from sidjax.data.task_names import STAGE_TASKS, TASKS

TRUNCATION = ("error", "drop", "left")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Length of training: whole epochs over the task mix, or a hard step cap (0 = no cap).
    c.epochs = 1
    c.max_steps = 0
    # Sequences per optimizer step (all devices together), split into grad_accum_steps micro-batches.
    c.batch_size = 32
    c.grad_accum_steps = 1
    c.eval_batch_size = 64
    # Sequences are padded to the smallest of these lengths that fits; the largest is the max length.
    c.length_buckets = (64, 128, 256, 512, 1024)
    # An example longer than the largest bucket: "error", "drop" it, or cut the "left" of its prompt.
    c.truncation = "error"
    add_optimizer_knobs(c, learning_rate=1e-3, warmup_steps=20, decay="cosine", end_lr_ratio=0.1,
                        weight_decay=0.01, adam_b2=0.98)
    # Output-layer logits only around each response (sized from the data), not on prompt tokens.
    c.response_logits_only = True
    # Positions whose logits are computed at once in the loss (0 = all at once).
    c.logits_chunk = 0
    # Checkpoints every N steps (and on SIGTERM); the last `keep_checkpoints` are kept for resuming.
    c.checkpoint_every = 200
    c.keep_checkpoints = 2
    # Valid loss after every epoch; stop after `patience` epochs without improvement (0 = never stop early).
    c.eval_every_epoch = True
    c.patience = 0
    c.max_eval_batches = 0  # 0 = the whole valid split
    # Distils the item Markov chain (`config.baselines.markov`) into the SID tokens of `sidseq` targets:
    # each token's loss is (1 - w) x its NLL + w x its cross-entropy against the chain's distribution
    # over that level's codes (the `distill_top_k` likeliest, renormalised); 0 = plain SFT. The train loss
    # logged is that mixture; the valid loss (early stopping) stays the plain NLL.
    c.distill_weight = 0.0
    c.distill_top_k = 16
    c.log_every = 10
    return c


def mixture_knobs(stage: str) -> ml_collections.ConfigDict:
    """Default mixture knobs of the `sft` / `reason_sft` sections: the stage's own tasks on, all samples."""
    c = ml_collections.ConfigDict()
    c.tasks = ml_collections.ConfigDict({name: (-1 if name in STAGE_TASKS[stage] else 0) for name in TASKS})
    c.task_seed = 0
    c.replay_path = ""  # local JSONL, one {"messages": [{"role", "content"}, ...]} per line
    c.replay_max_samples = -1
    # 0: sequence tasks read every train sample; N: only the N most recent (splits are in target-time order).
    c.recent_train_samples = 0
    return c


def sft_section() -> ml_collections.ConfigDict:
    c = section()
    add_lineage_knobs(c, init_from="")
    add_domains_knob(c)
    c.update(mixture_knobs("sft"))
    return c


def reason_sft_section() -> ml_collections.ConfigDict:
    c = section()
    add_lineage_knobs(c, init_from="sft")
    add_domains_knob(c)
    c.update(mixture_knobs("reason_sft"))
    c.learning_rate = 5e-4
    return c


def validate_mixture(section: ml_collections.ConfigDict, name: str) -> None:
    for task in TASKS:
        cap = section.tasks[task]
        require(cap >= -1, f"{name}.tasks.{task}", f"must be -1 (all), 0 (off) or a positive cap, got {cap}")
    require(
        any(section.tasks[t] != 0 for t in TASKS) or bool(section.replay_path),
        f"{name}.tasks",
        "every task is off (0) and there is no replay_path: nothing to train on",
    )
    require(section.replay_max_samples >= -1, f"{name}.replay_max_samples", "must be -1 (all) or >= 0")
    require(section.recent_train_samples >= 0, f"{name}.recent_train_samples", "must be >= 0 (0 = all)")
    if section.replay_path:
        require(Path(section.replay_path).is_file(), f"{name}.replay_path", f"no such file: {section.replay_path}")


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    validate_mixture(c, name)
    validate_lineage(c, name)
    validate_domains(c, config, name)
    require(c.epochs >= 1, f"{name}.epochs", "must be >= 1")
    require(c.max_steps >= 0, f"{name}.max_steps", "must be >= 0 (0 = no cap)")
    require(c.batch_size >= 1, f"{name}.batch_size", "must be >= 1")
    require(c.grad_accum_steps >= 1, f"{name}.grad_accum_steps", "must be >= 1")
    require(
        c.batch_size % c.grad_accum_steps == 0,
        f"{name}.grad_accum_steps",
        f"must divide batch_size ({c.batch_size})",
    )
    require(c.eval_batch_size >= 1, f"{name}.eval_batch_size", "must be >= 1")
    buckets = tuple(c.length_buckets)
    require(
        len(buckets) >= 1 and all(b >= 2 for b in buckets) and list(buckets) == sorted(set(buckets)),
        f"{name}.length_buckets",
        f"must be strictly increasing lengths >= 2, got {buckets}",
    )
    validate_optimizer(c, name)
    require(c.truncation in TRUNCATION, f"{name}.truncation", f"'{c.truncation}' is not one of {TRUNCATION}")
    require(c.logits_chunk >= 0, f"{name}.logits_chunk", "must be >= 0 (0 = no chunking)")
    require(c.checkpoint_every >= 1, f"{name}.checkpoint_every", "must be >= 1")
    require(c.keep_checkpoints >= 1, f"{name}.keep_checkpoints", "must be >= 1")
    require(c.patience >= 0, f"{name}.patience", "must be >= 0 (0 = no early stopping)")
    require(c.max_eval_batches >= 0, f"{name}.max_eval_batches", "must be >= 0 (0 = all)")
    require(c.log_every >= 1, f"{name}.log_every", "must be >= 1")
    require(0.0 <= c.distill_weight < 1.0, f"{name}.distill_weight", f"must be in [0, 1), got {c.distill_weight}")
    require(c.distill_top_k >= 1, f"{name}.distill_top_k", f"must be >= 1, got {c.distill_top_k}")
    require(c.distill_weight == 0.0 or c.tasks.sidseq != 0, f"{name}.distill_weight",
            "distils into 'sidseq' targets only: turn that task on (tasks.sidseq) or set the weight to 0")
