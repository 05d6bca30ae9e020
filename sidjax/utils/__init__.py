"""Small shared utilities: run output (metrics, progress), files, CPU facts, the huge-page restart."""
