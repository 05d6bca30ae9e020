"""The decoding choices a config names, kept free of jax so the config schema can read them."""

# Beam scores: "vocab" log-softmax over the whole vocabulary; "level" over the level's code block only.
NORMALIZATIONS = ("vocab", "level")
# "direct": prompt -> SID; "reasoning": prompt -> <think> ... </think> -> SID.
MODES = ("direct", "reasoning")
# The SIDs a reasoning may write (sidjax.decode.citations): "free" any tokens; "history" only the user's items.
CITATIONS = ("free", "history")
