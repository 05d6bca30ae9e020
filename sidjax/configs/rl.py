"""`config.grpo` and `config.sdpo`: stage 3, outcome-driven RL."""
import ml_collections


def grpo_section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.group_size = 16
    c.kl_beta = 1e-3
    return c


def sdpo_section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.negatives = 4
    c.beta = 0.1
    return c


section = grpo_section
