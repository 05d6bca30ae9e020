"""sidjax: reasoning generative recommendation over Semantic IDs, in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `sidjax.load` pulls in the model stack; import it only when asked for.
    if name == "load":
        from sidjax.api import load

        return load
    raise AttributeError(f"module 'sidjax' has no attribute {name!r}")
