"""`config.baselines`: same-split, same-metric reference recommenders (stage `baselines`)."""
import ml_collections

from sidjax.configs.rules import require

METHODS = ("popularity", "sasrec", "markov")
SPLITS = ("valid", "test")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.methods = METHODS  # which baselines the stage runs
    c.splits = SPLITS  # reported splits; SASRec is tuned on valid whatever this says
    c.topk = (1, 3, 5, 10, 20)  # K of HR@K / NDCG@K
    c.eval_batch_size = 1024  # users scored per jitted ranking call

    # SASRec (Kang & McAuley 2018): causal self-attention over the history, full softmax over items.
    c.sasrec = ml_collections.ConfigDict()
    c.sasrec.dim = 64  # item / position embedding width
    c.sasrec.layers = 2  # self-attention blocks
    c.sasrec.heads = 1
    c.sasrec.dropouts = (0.3, 0.5)  # tried in turn; the one with the best valid metric is kept
    c.sasrec.learning_rate = 2e-3
    c.sasrec.weight_decay = 0.1  # AdamW, on matrices and embeddings only
    c.sasrec.batch_size = 256
    c.sasrec.max_epochs = 100
    c.sasrec.patience = 5  # stop after this many epochs without a better valid metric
    c.sasrec.select_metric = "NDCG@10"  # valid metric for early stopping and dropout choice
    c.sasrec.seed = 0

    # A Markov chain over item ids (sidjax.baselines.markov): transitions counted on train, each row
    # smoothed toward popularity, the rows of the latest `context` items mixed with weights decay**k.
    # These values were chosen on valid as a re-scorer of industrial_scratch's beams (README).
    c.markov = ml_collections.ConfigDict()
    c.markov.smoothing = 1.0  # pseudo-counts of the popularity prior per row
    c.markov.context = 3
    c.markov.decay = 0.5
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(config.data.source != "mix" or "baselines" not in [s.split(":")[0] for s in config.stages], "stages",
            "the 'baselines' stage ranks one catalogue; with data.source 'mix', run it in each domain's own config")
    require(len(c.methods) >= 1 and all(m in METHODS for m in c.methods), f"{name}.methods",
            f"must name baselines among {METHODS}, got {tuple(c.methods)}")
    require(len(c.splits) >= 1 and all(s in SPLITS for s in c.splits), f"{name}.splits",
            f"must name splits among {SPLITS}, got {tuple(c.splits)}")
    require(len(c.topk) >= 1 and all(k >= 1 for k in c.topk), f"{name}.topk", f"every K must be >= 1, got {tuple(c.topk)}")
    require(c.eval_batch_size >= 1, f"{name}.eval_batch_size", "must be >= 1")
    s = c.sasrec
    require(s.dim >= 1, f"{name}.sasrec.dim", "must be >= 1")
    require(s.layers >= 1, f"{name}.sasrec.layers", "must be >= 1")
    require(s.heads >= 1 and s.dim % s.heads == 0, f"{name}.sasrec.heads",
            f"must be >= 1 and divide sasrec.dim ({s.dim}), got {s.heads}")
    require(len(s.dropouts) >= 1 and all(0 <= d < 1 for d in s.dropouts), f"{name}.sasrec.dropouts",
            f"must be one or more rates in [0, 1), got {tuple(s.dropouts)}")
    require(s.learning_rate > 0, f"{name}.sasrec.learning_rate", "must be > 0")
    require(s.weight_decay >= 0, f"{name}.sasrec.weight_decay", "must be >= 0")
    require(s.batch_size >= 1, f"{name}.sasrec.batch_size", "must be >= 1")
    require(s.max_epochs >= 1, f"{name}.sasrec.max_epochs", "must be >= 1")
    require(s.patience >= 1, f"{name}.sasrec.patience", "must be >= 1")
    metric, _, k = s.select_metric.partition("@")
    require(metric in ("HR", "NDCG") and k.isdigit() and int(k) in tuple(c.topk), f"{name}.sasrec.select_metric",
            f"must be HR@K or NDCG@K with K in topk {tuple(c.topk)}, got '{s.select_metric}'")
    m = c.markov
    require(m.smoothing > 0, f"{name}.markov.smoothing", f"must be > 0, got {m.smoothing}")
    require(m.context >= 1, f"{name}.markov.context", f"must be >= 1, got {m.context}")
    require(0 < m.decay <= 1, f"{name}.markov.decay", f"must be in (0, 1], got {m.decay}")
