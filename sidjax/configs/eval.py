"""`config.eval`: constrained beam search evaluation."""
import ml_collections


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.splits = ("test",)
    c.beams = 20
    c.topk = (1, 3, 5, 10, 20)
    return c
