"""sidjax: reasoning generative recommendation over Semantic IDs, in JAX/Flax."""

__version__ = "0.1.0"
