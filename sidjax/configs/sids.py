"""`config.sids`: how items get Semantic IDs."""
import ml_collections

from sidjax.configs import require


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = "paper"  # paper: the shipped index.json; rqvae / rqkmeans: learn them.
    c.levels = 3
    c.codebook_size = 256
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(c.source in ("paper", "rqvae", "rqkmeans"), f"{name}.source", f"unknown source '{c.source}'")
    require(c.levels >= 1, f"{name}.levels", "must be >= 1")
    require(c.codebook_size >= 2, f"{name}.codebook_size", "must be >= 2")
