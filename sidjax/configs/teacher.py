"""`config.teacher`: who writes the enrichment / reasoning corpus."""
import ml_collections


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.kind = "offline"  # offline template teacher, or openai (any OpenAI-compatible server)
    return c
