"""`config.eval`: constrained SID beam search evaluation (direct or reasoning mode)."""
import ml_collections

from sidjax.configs import require
from sidjax.decode.beam import NORMALIZATIONS
from sidjax.eval.evaluate import MODES


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.splits = ("test",)
    c.beams = 20  # beam width = number of returned SIDs per user
    c.topk = (1, 3, 5, 10, 20)  # K of HR@K / NDCG@K; each <= beams
    c.batch_size = 32  # users per search step, over all devices (a multiple of the data-axis size)
    c.max_users = 0  # 0: the whole split; N: the first N samples (quick looks)
    # vocab: log-softmax over the whole vocabulary (the papers' scores; ranks like transformers'
    # `generate(num_beams=..., prefix_allowed_tokens_fn=...)`); level: over the level's code block
    # only (no vocabulary-wide logits per beam: faster with a large LLM vocabulary).
    c.normalize = "vocab"
    c.prompt_bucket = 32  # prompts are left-padded to a multiple of this (fewer recompiles)
    c.mode = "direct"  # direct: prompt -> SID; reasoning: prompt -> <think>...</think> -> SID
    c.max_think_tokens = 256  # reasoning budget; `</think>` is appended when it runs out
    c.think_temperature = 0.0  # 0: greedy reasoning
    c.think_top_k = 0  # 0: off
    c.think_top_p = 1.0  # 1.0: off
    c.think_repetition_penalty = 1.0  # 1.0: off; > 1 discourages tokens already in the prompt or the reasoning
    c.checkpoint = ""  # "": the latest model stage before eval; else a model stage dir or a run dir
    # Model stage entries of this run searched as one ensemble (e.g. ("grpo", "grpo:b"), each tagged
    # entry a model of its own lineage; see sidjax.stages) by the eval entries listed after all of
    # them (earlier ones, e.g. `eval:sft`, evaluate one model as above); () = off. Direct mode only.
    c.ensemble = ()
    # A `sasrec` stage entry of this run whose SASRec re-scores the beams found (each SID's score plus
    # rescore_weight x log of the SASRec probability of its items; sidjax.eval.rescore), in the eval
    # entries listed after it; "" = off.
    c.rescore = ""
    c.rescore_weight = 0.5
    c.step = -1  # -1: the stage's output model (best/); N: its train checkpoint of step N
    c.write_samples = True  # per-user JSONL with history, top items, reasoning and hit rank
    c.seed = 0  # sampling seed for reasoning mode
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(len(c.splits) >= 1 and all(s in ("train", "valid", "test") for s in c.splits), f"{name}.splits",
            f"must name splits among train/valid/test, got {tuple(c.splits)}")
    require(c.beams >= 1, f"{name}.beams", "must be >= 1")
    require(len(c.topk) >= 1 and all(1 <= k <= c.beams for k in c.topk), f"{name}.topk",
            f"every K must be in 1..beams ({c.beams}), got {tuple(c.topk)}")
    require(c.batch_size >= 1, f"{name}.batch_size", "must be >= 1")
    require(c.max_users >= 0, f"{name}.max_users", "must be >= 0 (0 = all)")
    require(c.normalize in NORMALIZATIONS, f"{name}.normalize", f"'{c.normalize}' is not one of {NORMALIZATIONS}")
    require(c.prompt_bucket >= 1, f"{name}.prompt_bucket", "must be >= 1")
    require(c.mode in MODES, f"{name}.mode", f"'{c.mode}' is not one of {MODES}")
    _validate_ensemble(c, config, name)
    _validate_rescore(c, config, name)
    require(c.step >= -1, f"{name}.step", "must be -1 (the stage's output model) or a checkpoint step")
    require(c.max_think_tokens >= 1, f"{name}.max_think_tokens", "must be >= 1")
    require(c.think_temperature >= 0, f"{name}.think_temperature", "must be >= 0 (0 = greedy)")
    require(c.think_top_k >= 0, f"{name}.think_top_k", "must be >= 0 (0 = off)")
    require(0 < c.think_top_p <= 1, f"{name}.think_top_p", "must be in (0, 1]")
    require(c.think_repetition_penalty > 0, f"{name}.think_repetition_penalty", "must be > 0 (1.0 = off)")


def _validate_ensemble(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.stages import MODEL_STAGES, parse_stage

    members = tuple(c.ensemble)
    if not members:
        return
    stages = tuple(config.stages)
    require(len(members) >= 2 and len(set(members)) == len(members), f"{name}.ensemble",
            f"needs two or more distinct model stage entries, got {members}")
    for member in members:
        require(member in stages and parse_stage(member)[0] in MODEL_STAGES, f"{name}.ensemble",
                f"'{member}' is not a model stage entry of config.stages {stages}")
    require(not c.checkpoint, f"{name}.ensemble", "set either it or eval.checkpoint, not both")
    last = max(stages.index(m) for m in members)
    for spec in stages[last + 1:]:
        stage, tag = parse_stage(spec)
        mode = tag if tag in MODES else c.mode
        require(stage != "eval" or mode == "direct", f"{name}.ensemble",
                f"stage '{spec}' would search the ensemble in {mode} mode; an ensemble searches in direct mode only")


def _validate_rescore(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.stages import parse_stage

    require(c.rescore_weight > 0, f"{name}.rescore_weight", f"must be > 0, got {c.rescore_weight}")
    if not c.rescore:
        return
    stages = tuple(config.stages)
    require(c.rescore in stages and parse_stage(c.rescore)[0] == "sasrec", f"{name}.rescore",
            f"'{c.rescore}' is not a sasrec stage entry of config.stages {stages}")
