"""Run every benchmark under bench/ and print one table of ratios: python -m bench.all

Each benchmark is a script `bench/<name>.py` that measures sidjax against its PyTorch
reference in the same run and ends with the line `speedup=<ratio>`. They run one after
another as subprocesses (so no two compete for the CPU); a failing or unparsable one is
reported and makes the exit status non-zero.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent
_SPEEDUP = re.compile(r"^speedup=([0-9.eE+-]+)\s*$")
_NOT_BENCHMARKS = {"__init__", "all"}


@dataclass(frozen=True)
class Outcome:
    name: str
    speedup: Optional[float]
    seconds: float
    error: str = ""


def discover(directory: Path = BENCH_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.py") if p.stem not in _NOT_BENCHMARKS)


def parse_speedup(output: str) -> Optional[float]:
    """The ratio on the last non-empty line, or None when that line is not `speedup=<ratio>`."""
    lines = [line for line in output.splitlines() if line.strip()]
    match = _SPEEDUP.match(lines[-1]) if lines else None
    return float(match.group(1)) if match else None


def run_one(name: str, package: str, cwd: Path, timeout_s: float) -> Outcome:
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", f"{package}.{name}"], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Outcome(name, None, time.time() - start, f"timed out after {timeout_s:.0f} s")
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return Outcome(name, None, seconds, f"exit {proc.returncode}: {tail[0]}")
    speedup = parse_speedup(proc.stdout)
    if speedup is None:
        return Outcome(name, None, seconds, "last line is not 'speedup=<ratio>'")
    return Outcome(name, speedup, seconds)


def table(outcomes: list[Outcome]) -> str:
    rows = ["| benchmark | sidjax / PyTorch | wall (s) | status |", "|---|---:|---:|---|"]
    for o in outcomes:
        ratio = f"{o.speedup:.2f}x" if o.speedup is not None else "–"
        rows.append(f"| {o.name} | {ratio} | {o.seconds:.0f} | {o.error or 'ok'} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run (default: all)")
    parser.add_argument("--timeout_s", type=float, default=1800.0, help="limit for each benchmark")
    args = parser.parse_args(argv)
    names = args.only or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {discover()}")
    outcomes = []
    for name in names:
        print(f"running bench/{name}.py ...", flush=True)
        outcomes.append(run_one(name, "bench", BENCH_DIR.parent, args.timeout_s))
    print(table(outcomes))
    return 0 if all(o.error == "" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
