"""`config.mesh`: device mesh axes (data, fsdp, tensor)."""
import ml_collections


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = -1
    c.fsdp = 1
    c.tensor = 1
    return c
