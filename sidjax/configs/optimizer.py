"""The AdamW knobs every trained stage shares (read by `sidjax.train.state.make_tx`), in one place."""
import ml_collections

from sidjax.configs.rules import require

DECAYS = ("cosine", "linear", "constant")


def add_optimizer_knobs(
    c: ml_collections.ConfigDict,
    *,
    learning_rate: float,
    warmup_steps: int,
    decay: str,
    end_lr_ratio: float,
    weight_decay: float,
    adam_b2: float,
) -> None:
    # AdamW with linear warmup, then cosine / linear decay to learning_rate * end_lr_ratio (or constant).
    c.learning_rate = learning_rate
    c.warmup_steps = warmup_steps
    c.decay = decay
    c.end_lr_ratio = end_lr_ratio
    c.weight_decay = weight_decay
    c.adam_b1 = 0.9
    c.adam_b2 = adam_b2
    c.adam_eps = 1e-8
    c.max_grad_norm = 1.0  # 0 = no clipping


def validate_optimizer(c: ml_collections.ConfigDict, name: str) -> None:
    require(c.learning_rate > 0, f"{name}.learning_rate", f"must be > 0, got {c.learning_rate}")
    require(c.warmup_steps >= 0, f"{name}.warmup_steps", f"must be >= 0, got {c.warmup_steps}")
    require(c.decay in DECAYS, f"{name}.decay", f"'{c.decay}' is not one of {DECAYS}")
    require(0.0 <= c.end_lr_ratio <= 1.0, f"{name}.end_lr_ratio", f"must be in [0, 1], got {c.end_lr_ratio}")
    require(c.weight_decay >= 0, f"{name}.weight_decay", "must be >= 0")
    require(0.0 <= c.adam_b1 < 1.0, f"{name}.adam_b1", "must be in [0, 1)")
    require(0.0 <= c.adam_b2 < 1.0, f"{name}.adam_b2", "must be in [0, 1)")
    require(c.adam_eps > 0, f"{name}.adam_eps", "must be > 0")
    require(c.max_grad_norm >= 0, f"{name}.max_grad_norm", "must be >= 0 (0 = no clipping)")
