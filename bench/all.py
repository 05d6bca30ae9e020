"""Run every benchmark under bench/ and print one table of ratios: python -m bench.all [--threads 1]

Each benchmark is a script `bench/<name>.py` that measures sidjax against its reference in the
same run (bench.harness) and ends with a `result: ...` line (min / median / max per side, the
load) and the line `speedup=<ratio of medians>`. They run one after another as subprocesses (so
no two compete for the CPU); the table shows each ratio with the spread of both sides and whether
the machine was loaded (`noisy`). A failing or unparsable one is reported and makes the exit
status non-zero; a noisy one does not.
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

from bench import harness

BENCH_DIR = Path(__file__).resolve().parent
_SPEEDUP = re.compile(r"^speedup=([0-9.eE+-]+)\s*$")
_NOT_BENCHMARKS = {"__init__", "all", "harness", "peaks"}


@dataclass(frozen=True)
class Outcome:
    name: str
    speedup: Optional[float]
    seconds: float
    error: str = ""
    result: Optional[harness.Comparison] = None  # None: the script printed no `result:` line


def discover(directory: Path = BENCH_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.py") if p.stem not in _NOT_BENCHMARKS)


def parse_speedup(output: str) -> Optional[float]:
    """The ratio on the last non-empty line, or None when that line is not `speedup=<ratio>`."""
    lines = [line for line in output.splitlines() if line.strip()]
    match = _SPEEDUP.match(lines[-1]) if lines else None
    return float(match.group(1)) if match else None


def run_one(name: str, package: str, cwd: Path, timeout_s: float, threads: int = 0) -> Outcome:
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", f"{package}.{name}", *(["--threads", "1"] if threads else [])],
                              cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Outcome(name, None, time.time() - start, f"timed out after {timeout_s:.0f} s")
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return Outcome(name, None, seconds, f"exit {proc.returncode}: {tail[0]}")
    speedup = parse_speedup(proc.stdout)
    if speedup is None:
        return Outcome(name, None, seconds, "last line is not 'speedup=<ratio>'")
    return Outcome(name, speedup, seconds, result=harness.parse_result(proc.stdout))


def _side(name: str, spread: harness.Spread) -> str:
    return f"{name} {spread.min * 1e3:.1f} / {spread.median * 1e3:.1f} / {spread.max * 1e3:.1f}"


def table(outcomes: list[Outcome]) -> str:
    """Markdown: the ratio of medians, each side's min / median / max (ms), the load, the noisy mark."""
    rows = ["| benchmark | ratio of medians | ours: min / median / max (ms) | reference: min / median / max (ms) "
            "| peak load / cores | noisy | wall (s) | status |", "|---|---:|---|---|---:|---|---:|---|"]
    for o in outcomes:
        ratio = f"{o.speedup:.2f}x" if o.speedup is not None else "–"
        r = o.result
        sides = [_side(r.a_name, r.a), _side(r.b_name, r.b)] if r else ["–", "–"]
        load = f"{r.load.peak:.2f} / {r.load.cores}" if r else "–"
        noisy = ("noisy" if r.noisy else "no") if r else "–"
        rows.append(f"| {o.name} | {ratio} | {' | '.join(sides)} | {load} | {noisy} | {o.seconds:.0f} "
                    f"| {o.error or 'ok'} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run (default: all)")
    parser.add_argument("--timeout_s", type=float, default=1800.0, help="limit for each benchmark")
    harness.add_threads_arg(parser)
    args = parser.parse_args(argv)
    names = args.only or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {discover()}")
    outcomes = []
    for name in names:
        print(f"running bench/{name}.py ...", flush=True)
        outcomes.append(run_one(name, "bench", BENCH_DIR.parent, args.timeout_s, args.threads))
    print(f"{harness.describe_cpu(harness.machine())}; --threads {args.threads}")
    print(table(outcomes))
    return 0 if all(o.error == "" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
