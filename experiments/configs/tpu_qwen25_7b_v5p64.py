"""Qwen2.5-7B on a v5p-64 pod slice (8 hosts x 4 chips = 32 devices, 95 GiB HBM each).

Mesh (data 1, fsdp 8, tensor 4): attention heads (28), KV heads (4), the MLP (18944) and the
vocabulary are split 4 ways within a host's chips, and everything else is fully sharded over
8-way FSDP across hosts; the batch is split over fsdp. Compute in bfloat16, parameters and
AdamW moments in float32. tests/test_memory.py checks each model stage's memory plan against
95 GiB devices.

Every host needs the weights at `model.path` (copy them with launch/tpu_pod.sh, or mount a disk):
    huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir ~/models/Qwen2.5-7B-Instruct
"""
from experiments.configs.paper_scale import paper_scale_config

# The architecture fields of Qwen/Qwen2.5-7B-Instruct's config.json, for planning memory before any weights exist.
HF_CONFIG = {
    "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768,
}


def get_config():
    # 256 sequences per SFT step in 8 micro-batches.
    config = paper_scale_config("tpu_qwen25_7b_v5p64", "~/models/Qwen2.5-7B-Instruct",
                                sft_batch=256, sft_lrs=(5e-5, 2e-5), grpo_prompts=16, eval_batch=128)
    config.mesh.data = 1
    config.mesh.fsdp = -1  # 8 on 32 devices
    config.mesh.tensor = 4
    return config
