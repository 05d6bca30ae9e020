"""Benchmark scripts: `python -m bench.<name>`; each prints a ratio vs. a reference, last line `speedup=<ratio>`."""
from sidjax.utils import hugepages

hugepages.restart_for(__name__)  # before the script's own imports: glibc reads the tunable at start
