"""`config.model`: the causal LM (pretrained from a local dir, or from scratch)."""
import ml_collections


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "scratch"  # scratch | hf (local safetensors dir) | gguf
    c.path = ""
    return c
