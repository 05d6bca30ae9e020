"""Small shared utilities: run output (metrics, progress)."""
