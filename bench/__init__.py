"""Benchmark scripts: `python -m bench.<name>`; each prints a ratio vs. a reference, last line `speedup=<ratio>`."""
