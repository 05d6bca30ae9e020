"""Qwen2.5-7B on a v5p-64 pod slice (8 hosts x 4 chips = 32 devices, 95 GiB HBM each).

Mesh (data 1, fsdp 8, tensor 4): attention heads (28), KV heads (4), the MLP (18944) and the
vocabulary are split 4 ways within a host's chips, and everything else is fully sharded over
8-way FSDP across hosts; the batch is split over fsdp. Compute in bfloat16, parameters and
AdamW moments in float32. tests/test_memory.py checks each model stage's memory plan against
95 GiB devices.

Every host needs the weights at `model.path` (copy them with launch/tpu_pod.sh, or mount a disk):
    huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir ~/models/Qwen2.5-7B-Instruct
"""
import os

from sidjax.configs import base_config

# The architecture fields of Qwen/Qwen2.5-7B-Instruct's config.json, for planning memory before any weights exist.
HF_CONFIG = {
    "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768,
}


def get_config():
    config = base_config()
    config.name = "tpu_qwen25_7b_v5p64"
    config.stages = ("data", "sids", "teacher", "sft", "reason_sft", "grpo", "eval")

    config.model.source = "hf"
    config.model.path = os.path.expanduser("~/models/Qwen2.5-7B-Instruct")
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "float32"
    config.model.attention_impl = "xla"

    config.mesh.data = 1
    config.mesh.fsdp = -1  # 8 on 32 devices
    config.mesh.tensor = 4
    config.mesh.remat = "none"

    for stage, lr in (("sft", 5e-5), ("reason_sft", 2e-5)):
        c = config[stage]
        c.batch_size = 256
        c.grad_accum_steps = 8  # 32 sequences per micro-batch: 4 per fsdp shard
        c.length_buckets = (256, 512, 1024)
        c.truncation = "left"
        c.logits_chunk = 256
        c.learning_rate = lr
        c.warmup_steps = 100
        c.eval_batch_size = 256
        c.checkpoint_every = 500

    config.grpo.mode = "reasoning"
    config.grpo.rollout = "sample"
    config.grpo.batch_size = 16  # prompts per step
    config.grpo.group_size = 8
    config.grpo.prompt_length = 512
    config.grpo.max_new_tokens = 256
    config.grpo.logits_chunk = 256
    config.grpo.steps = 500
    config.grpo.checkpoint_every = 50

    config.eval.mode = "reasoning"
    config.eval.batch_size = 128
    return config
