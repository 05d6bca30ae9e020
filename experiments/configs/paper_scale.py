"""What every paper-scale run (a pretrained Qwen on a TPU slice or a GPU node) sets the same way.

A pretrained HF model from a local directory in bfloat16 compute with float32 parameters, the
full SIDReasoner pipeline, long-sequence SFT buckets with chunked logits, and reasoning-mode
GRPO and eval. Each config file adds its model path, mesh and batch sizes.
"""
import os

import ml_collections

from sidjax.configs import base_config


def paper_scale_config(name: str, model_dir: str, *, sft_batch: int, sft_lrs: tuple[float, float],
                       grpo_prompts: int, eval_batch: int) -> ml_collections.ConfigDict:
    config = base_config()
    config.name = name
    config.stages = ("data", "sids", "teacher", "sft", "reason_sft", "grpo", "eval")

    config.model.source = "hf"
    config.model.path = os.path.expanduser(model_dir)
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "float32"
    config.model.attention_impl = "xla"
    config.mesh.remat = "none"

    for stage, lr in zip(("sft", "reason_sft"), sft_lrs):
        c = config[stage]
        c.batch_size = sft_batch
        c.grad_accum_steps = 8
        c.length_buckets = (256, 512, 1024)
        c.truncation = "left"
        c.logits_chunk = 256
        c.learning_rate = lr
        c.warmup_steps = 100
        c.eval_batch_size = sft_batch
        c.checkpoint_every = 500

    config.grpo.init_from = "reason_sft"
    config.grpo.mode = "reasoning"
    config.grpo.rollout = "sample"
    config.grpo.batch_size = grpo_prompts
    config.grpo.group_size = 8
    config.grpo.prompt_length = 512
    config.grpo.max_new_tokens = 256
    config.grpo.logits_chunk = 256
    config.grpo.steps = 500
    config.grpo.checkpoint_every = 50

    config.eval.models = ("grpo",)
    config.eval.mode = "reasoning"
    config.eval.batch_size = eval_batch
    return config
