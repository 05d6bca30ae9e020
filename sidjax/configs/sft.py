"""`config.sft` (stage 1, alignment) and `config.reason_sft` (stage 2, reasoning activation)."""
import ml_collections


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.epochs = 1
    c.batch_size = 32
    c.learning_rate = 1e-3
    return c


def sft_section() -> ml_collections.ConfigDict:
    return section()


def reason_sft_section() -> ml_collections.ConfigDict:
    return section()
