"""`config.grpo` and `config.sdpo`: stage 3, outcome-driven RL.

GRPO (SIDReasoner / MiniOneRec / GREAM's SRPO are settings of it): G rollouts per
prompt, verifiable SID rewards, group-relative advantages, clipped ratio + k3 KL.
S-DPO: softmax DPO of the target SID against M negative SIDs.
"""
import ml_collections

from sidjax.configs.domains import add_domains_knob, validate_domains
from sidjax.configs.lineage import add_lineage_knobs, validate_lineage
from sidjax.configs.optimizer import add_optimizer_knobs, validate_optimizer
from sidjax.configs.rules import require
from sidjax.decode.options import CITATIONS, MODES

ROLLOUTS = ("sample", "beam")  # free sampling (reasoning then SID) | top-G constrained beams (MiniOneRec)
ADVANTAGES = ("grpo", "dr_grpo", "pass_at_k")
AGGREGATIONS = ("token_mean", "sequence_mean")
NEGATIVES = ("random", "beam")


def _loop_knobs(c: ml_collections.ConfigDict, batch_size: int) -> None:
    add_lineage_knobs(c, init_from="sft")
    add_domains_knob(c)
    c.split = "train"  # samples whose (history, target) pairs are the prompts
    # 0: every sample of the split; N: its N most recent (samples are kept in target-time order), the
    # ones closest in time to valid/test.
    c.recent_samples = 0
    c.max_samples = 0  # 0: all (of the recent ones); else a deterministic subset of them
    c.batch_size = batch_size  # prompts per step
    c.prompt_length = 192  # prompts are left-padded to this many tokens; a longer prompt is an error
    c.steps = 100
    c.log_every = 1
    c.checkpoint_every = 50  # train-state checkpoints (for resuming); the last keep_checkpoints are kept
    c.keep_checkpoints = 2
    c.logits_chunk = 0  # positions whose logits are computed at once when scoring (0: all at once)


def grpo_section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    _loop_knobs(c, batch_size=4)
    add_optimizer_knobs(c, learning_rate=1e-5, warmup_steps=0, decay="constant", end_lr_ratio=1.0,
                        weight_decay=0.0, adam_b2=0.999)
    c.mode = "direct"
    c.rollout = "beam"
    c.group_size = 16
    c.temperature = 1.0  # sampling rollouts
    c.top_p = 1.0
    c.repetition_penalty = 1.0  # sampling rollouts; 1.0: off (see sidjax.decode.sample.SamplingParams)
    c.no_repeat_ngram = 0  # sampling rollouts; 0: off; else no n-gram of this many tokens repeats in a rollout
    # reasoning-mode rollouts: "free" (the papers), or "history": every SID the thought writes is one of the
    # user's items, as `eval.citations` decodes it (sidjax.decode.citations); the answer stays free.
    c.citations = "free"
    c.max_new_tokens = 64  # sampling rollouts: reasoning + SID budget
    c.updates_per_batch = 1  # policy updates on each rollout batch (>1: old log-probs are cached)
    c.clip_eps_low = 0.2
    c.clip_eps_high = 0.2
    c.kl_beta = 1e-3
    c.aggregation = "token_mean"
    c.advantage = "grpo"
    c.advantage_eps = 1e-6
    c.pass_k = 4  # advantage = "pass_at_k"
    # Weighted sum of sidjax.train.rewards components: prefix (SIDReasoner), exact, rank (MiniOneRec, beams
    # only), gream (GREAM's residual-sensitive levels), search (reasoning mode, sampled rollouts: the eval's
    # NDCG of the target among the `search_beams` SIDs searched after each thought).
    c.reward_weights = ml_collections.ConfigDict({"prefix": 1.0, "exact": 0.0, "rank": 0.0, "gream": 0.0,
                                                  "search": 0.0})
    c.search_beams = 10
    # False: a SID that repeats one of the user's history items earns no prefix / gream credit unless it is
    # the target (the papers pay it: a copied item of the target's category gets first-level credit).
    c.credit_copies = True
    c.prefix_credit = (0.25, 0.5)  # SIDReasoner: 1 level right, 2 levels right (all levels: 1.0)
    c.real_item_bonus = 0.1
    c.gream_credit = (0.5, 0.707, 0.866, 0.95)  # GREAM: 1..4 leading levels right (all: 1.0)
    return c


def sdpo_section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    _loop_knobs(c, batch_size=8)
    add_optimizer_knobs(c, learning_rate=1e-5, warmup_steps=0, decay="constant", end_lr_ratio=1.0,
                        weight_decay=0.0, adam_b2=0.999)
    c.negatives = 4
    c.negative_source = "random"  # random items | hard negatives: the top constrained beams that miss
    c.beta = 0.1
    return c


def _validate_loop(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(c.split in ("train", "valid"), f"{name}.split", f"must be 'train' or 'valid' (never test), got '{c.split}'")
    for key in ("batch_size", "prompt_length", "steps", "log_every", "checkpoint_every", "keep_checkpoints"):
        require(c[key] > 0, f"{name}.{key}", f"must be > 0, got {c[key]}")
    require(c.recent_samples >= 0, f"{name}.recent_samples", f"must be >= 0, got {c.recent_samples}")
    require(c.max_samples >= 0, f"{name}.max_samples", f"must be >= 0, got {c.max_samples}")
    require(c.logits_chunk >= 0, f"{name}.logits_chunk", f"must be >= 0, got {c.logits_chunk}")
    validate_optimizer(c, name)
    validate_lineage(c, name)
    validate_domains(c, config, name)
    require(bool(c.init_from), f"{name}.init_from", "must name the model stage entry it fine-tunes")


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    _validate_loop(c, config, name)
    if name == "sdpo":
        require(c.negatives >= 1, f"{name}.negatives", f"must be >= 1, got {c.negatives}")
        require(c.negative_source in NEGATIVES, f"{name}.negative_source",
                f"must be one of {NEGATIVES}, got '{c.negative_source}'")
        require(c.beta > 0, f"{name}.beta", f"must be > 0, got {c.beta}")
        return
    require(c.mode in MODES, f"{name}.mode", f"must be one of {MODES}, got '{c.mode}'")
    require(c.rollout in ROLLOUTS, f"{name}.rollout", f"must be one of {ROLLOUTS}, got '{c.rollout}'")
    require(not (c.rollout == "beam" and c.mode == "reasoning"), f"{name}.rollout",
            "beam rollouts search SIDs directly; use rollout='sample' with mode='reasoning'")
    require(c.group_size >= 2, f"{name}.group_size", f"must be >= 2 (advantages are group-relative), got {c.group_size}")
    require(c.temperature > 0, f"{name}.temperature", f"must be > 0, got {c.temperature}")
    require(0 < c.top_p <= 1, f"{name}.top_p", f"must be in (0, 1], got {c.top_p}")
    require(c.repetition_penalty > 0, f"{name}.repetition_penalty",
            f"must be > 0 (1.0 = off), got {c.repetition_penalty}")
    require(c.no_repeat_ngram >= 0, f"{name}.no_repeat_ngram", f"must be >= 0 (0 = off), got {c.no_repeat_ngram}")
    require(c.citations in CITATIONS, f"{name}.citations", f"must be one of {CITATIONS}, got '{c.citations}'")
    require(c.citations == "free" or c.mode == "reasoning", f"{name}.citations",
            "citations constrain a thought: 'history' needs mode='reasoning'")
    require(c.max_new_tokens > 0, f"{name}.max_new_tokens", f"must be > 0, got {c.max_new_tokens}")
    require(c.updates_per_batch >= 1, f"{name}.updates_per_batch", f"must be >= 1, got {c.updates_per_batch}")
    for key in ("clip_eps_low", "clip_eps_high"):
        require(0 < c[key] < 1, f"{name}.{key}", f"must be in (0, 1), got {c[key]}")
    require(c.kl_beta >= 0, f"{name}.kl_beta", f"must be >= 0, got {c.kl_beta}")
    require(c.aggregation in AGGREGATIONS, f"{name}.aggregation", f"must be one of {AGGREGATIONS}, got '{c.aggregation}'")
    require(c.advantage in ADVANTAGES, f"{name}.advantage", f"must be one of {ADVANTAGES}, got '{c.advantage}'")
    require(c.advantage_eps > 0, f"{name}.advantage_eps", f"must be > 0, got {c.advantage_eps}")
    require(1 <= c.pass_k <= c.group_size, f"{name}.pass_k", f"must be in [1, group_size={c.group_size}], got {c.pass_k}")
    weights = dict(c.reward_weights)
    require(any(w != 0 for w in weights.values()), f"{name}.reward_weights", "at least one weight must be non-zero")
    require(weights.get("rank", 0.0) == 0.0 or c.rollout == "beam", f"{name}.reward_weights.rank",
            "the rank penalty needs rank-ordered groups: use rollout='beam'")
    require(weights.get("search", 0.0) == 0.0 or (c.mode == "reasoning" and c.rollout == "sample"),
            f"{name}.reward_weights.search", "the search after a thought needs mode='reasoning' and rollout='sample'")
    require(c.search_beams >= 1, f"{name}.search_beams", f"must be >= 1, got {c.search_beams}")
    require(c.credit_copies or c.citations == "history", f"{name}.credit_copies",
            "False needs citations='history' (the prompts' history SIDs travel with them then)")
    require(len(c.prefix_credit) >= 1, f"{name}.prefix_credit", "needs at least one entry")
    require(len(c.gream_credit) >= 1, f"{name}.gream_credit", "needs at least one entry")
