"""The teacher corpus for alignment tasks 7, 8 and stage-2 reasoning: an LLM (client, llm, prompts) or templates (offline)."""
