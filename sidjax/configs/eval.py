"""`config.eval`: constrained SID beam search evaluation (direct or reasoning mode).

Which model an `eval` entry scores is its own setting, not its place in `config.stages`:
`models` names model stage entries of the run (two or more: one ensemble, each SID scoring the
mean of the members' log-probabilities), `rescore` names `sasrec` / `markov` entries whose dense
item models re-score the beams found. Each eval entry may override any of these knobs in
`config.entries` (see `sidjax.configs`), e.g. `config.entries = {"eval:sft": {"models": ("sft",)}}`;
`sidjax.stages.entries` checks at launch that the named entries are listed before it.
"""
import ml_collections

from sidjax.configs.domains import add_domains_knob, validate_domains
from sidjax.configs.rules import require
from sidjax.decode.options import CITATIONS, MODES, NORMALIZATIONS


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.splits = ("test",)
    c.beams = 20  # beam width = number of returned SIDs per user
    c.topk = (1, 3, 5, 10, 20)  # K of HR@K / NDCG@K; each <= beams
    c.batch_size = 32  # users per search step, over all devices (a multiple of the data-axis size)
    c.max_users = 0  # 0: the whole split; N: the first N samples (quick looks); of each domain in a mix
    add_domains_knob(c)  # a mix is scored domain by domain, each ranking its own catalogue
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
    c.think_no_repeat_ngram = 0  # 0: off; else no n-gram of this many tokens repeats within the reasoning
    c.citations = "free"  # reasoning mode: "free", or "history": every SID the reasoning writes is a history item's
    # Reasoning mode: 1 = one thought per history; K > 1 (needs think_temperature > 0) = K sampled thoughts (path k
    # with seed + k), each searched, a SID scored by its mean probability over them (the thought summed out; K x
    # the eval's time, one path's memory).
    c.think_paths = 1
    # The model stage entries scored: one model, or two or more searched as one ensemble (direct mode only).
    c.models = ("grpo",)
    c.checkpoint = ""  # "": score `models`; else a model stage dir or a run dir scored instead
    # Dense item models (`sasrec` / `markov` stage entries) that re-score the beams found: each SID's score
    # plus, per model, its weight in rescore_weights (same order) x the log of the model's probability of
    # the SID's items (sidjax.eval.rescore); () = off.
    c.rescore = ()
    c.rescore_weights = ()
    # "": search. Else an earlier eval entry of the same models and search settings, direct mode, without
    # re-scoring, whose saved beams (<split>.jsonl) this entry re-scores with `rescore` instead of searching
    # again: the same results as the search, in seconds (sidjax.eval.saved_beams).
    c.beams_from = ""
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
    validate_domains(c, config, name)
    require(c.max_users >= 0, f"{name}.max_users", "must be >= 0 (0 = all)")
    require(c.normalize in NORMALIZATIONS, f"{name}.normalize", f"'{c.normalize}' is not one of {NORMALIZATIONS}")
    require(c.prompt_bucket >= 1, f"{name}.prompt_bucket", "must be >= 1")
    require(c.mode in MODES, f"{name}.mode", f"'{c.mode}' is not one of {MODES}")
    _validate_models(c, name)
    _validate_rescore(c, name)
    require(c.step >= -1, f"{name}.step", "must be -1 (the stage's output model) or a checkpoint step")
    require(c.max_think_tokens >= 1, f"{name}.max_think_tokens", "must be >= 1")
    require(c.think_temperature >= 0, f"{name}.think_temperature", "must be >= 0 (0 = greedy)")
    require(c.think_top_k >= 0, f"{name}.think_top_k", "must be >= 0 (0 = off)")
    require(0 < c.think_top_p <= 1, f"{name}.think_top_p", "must be in (0, 1]")
    require(c.think_repetition_penalty > 0, f"{name}.think_repetition_penalty", "must be > 0 (1.0 = off)")
    require(c.citations in CITATIONS, f"{name}.citations", f"must be one of {CITATIONS}, got '{c.citations}'")
    require(c.think_no_repeat_ngram >= 0, f"{name}.think_no_repeat_ngram", "must be >= 0 (0 = off)")
    require(c.think_paths >= 1, f"{name}.think_paths", "must be >= 1")
    require(c.think_paths == 1 or (c.mode == "reasoning" and c.think_temperature > 0), f"{name}.think_paths",
            f"{c.think_paths} paths need mode 'reasoning' and think_temperature > 0 (greedy paths are all one)")


def _validate_models(c: ml_collections.ConfigDict, name: str) -> None:
    models = tuple(c.models)
    if c.checkpoint:
        return
    require(len(models) >= 1, f"{name}.models", "must name a model stage entry (or set eval.checkpoint)")
    require(len(set(models)) == len(models), f"{name}.models", f"names an entry twice: {models}")
    require(len(models) == 1 or c.mode == "direct", f"{name}.models",
            f"an ensemble {models} searches in direct mode only, not {c.mode}")


def _validate_rescore(c: ml_collections.ConfigDict, name: str) -> None:
    entries, weights = tuple(c.rescore), tuple(c.rescore_weights)
    require(len(weights) == len(entries), f"{name}.rescore_weights",
            f"needs one weight per eval.rescore entry {entries}, got {weights}")
    require(all(w > 0 for w in weights), f"{name}.rescore_weights", f"every weight must be > 0, got {weights}")
    require(len(set(entries)) == len(entries), f"{name}.rescore", f"names an entry twice: {entries}")
    require(not c.beams_from or (entries and c.mode == "direct"), f"{name}.beams_from",
            f"re-scores saved beams, so it needs eval.rescore and direct mode (got rescore {entries}, mode {c.mode})")
