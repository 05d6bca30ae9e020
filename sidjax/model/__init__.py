"""The causal LM: config, NNX transformer with KV cache, HF/GGUF weights, SID vocabulary."""
