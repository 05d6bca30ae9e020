"""SIDReasoner on Industrial_and_Scientific with Qwen3-1.7B: one v5p-8 host (4 chips) or 8x H100.

Mesh: the whole model fully sharded (FSDP) over every device, no tensor parallelism (a 1.7B
model's layers are too narrow for it to pay), batch split over the same devices. Compute in
bfloat16, parameters and AdamW moments in float32. Without a remat policy the activations of a
1024-token micro-batch dominate, so SFT accumulates gradients over micro-batches; the memory
plan (`sidjax.parallel.memory`) checks each stage against the device before it compiles and
tests/test_memory.py checks this file against 95 GiB (v5p) and 80 GiB (H100) devices.

Before launching, put the model where `model.path` points (all hosts, or a shared disk):
    huggingface-cli download Qwen/Qwen3-1.7B --local-dir ~/models/Qwen3-1.7B
See launch/README.md for the TPU VM and SLURM commands.
"""
from experiments.configs.paper_scale import paper_scale_config

# The architecture fields of Qwen/Qwen3-1.7B's config.json, for planning memory before any weights exist.
HF_CONFIG = {
    "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 6144,
    "rope_theta": 1000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 40960,
}


def get_config():
    # 128 sequences per SFT step in 8 micro-batches.
    config = paper_scale_config("industrial_qwen3_1p7b", "~/models/Qwen3-1.7B",
                                sft_batch=128, sft_lrs=(1e-4, 5e-5), grpo_prompts=8, eval_batch=64)
    config.mesh.data = 1
    config.mesh.fsdp = -1  # 4 on a v5p-8, 8 on 8x H100
    config.mesh.tensor = 1
    return config
