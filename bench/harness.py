"""What every bench/ script shares, so a ratio printed by one means what it means in the others.

A ratio measured on a shared machine moves with whatever else runs. So each script runs its
two sides interleaved (A B A B ...: both see the same load), repeats each at least
`MIN_REPEATS` times after a warm-up, and prints min / median / max per side, the ratio of the
medians, the machine (CPU model, matmul-relevant flags, thread counts) and the load average
before and after; a result measured while the load exceeded the core count is marked `noisy`.

`--threads 1` pins both sides to one thread. XLA reads its flags when its backend starts, so
a script calls `threads_before_jax()` before it imports jax.

The last two lines of a script are `result: key=value ...` (the whole summary, which
`bench.all` parses back with `parse_result`) and `speedup=<ratio of medians>`.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from sidjax.utils import cpuinfo

MIN_REPEATS = 5
MATMUL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# XLA's CPU backend then runs its Eigen kernels on the calling thread only.
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)
_RESULT_PREFIX = "result:"
_PAIR = re.compile(r"(\w+)=(\S+)")


# ---------------------------------------------------------------- threads (before jax is imported)

def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """`--threads 0|1` (0: each library's default, one thread per core)."""
    parser.add_argument("--threads", type=int, default=0, choices=(0, 1),
                        help="1: one CPU thread for both sides (XLA and torch intra-op); 0: their defaults")


def threads_from_argv(argv: Sequence[str]) -> int:
    """The `--threads` value in `argv`, read apart from the script's own options (which come later)."""
    pre = argparse.ArgumentParser(add_help=False)
    add_threads_arg(pre)
    known, _ = pre.parse_known_args(list(argv))
    return known.threads


def single_thread_xla_flags(existing: str) -> str:
    """`existing` XLA_FLAGS plus the flags that keep XLA's CPU backend on one thread."""
    missing = [flag for flag in SINGLE_THREAD_XLA_FLAGS if flag not in existing.split()]
    return " ".join([existing.strip(), *missing]).strip()


def threads_before_jax(torch_too: bool = True) -> int:
    """Apply `--threads` from the command line; call it before `import jax`. Returns the value."""
    threads = threads_from_argv(sys.argv[1:])
    if threads == 1:
        os.environ["XLA_FLAGS"] = single_thread_xla_flags(os.environ.get("XLA_FLAGS", ""))
        if torch_too:
            import torch

            torch.set_num_threads(1)
    return threads


# ---------------------------------------------------------------- compute dtype
# sidjax.model.precision imports jax: imported in the functions, which a script calls after its threads are set.

DTYPES = ("float32", "bfloat16")


def add_dtype_arg(parser: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """`--dtype float32|bfloat16|auto` for both sides, `default` auto (what sidjax picks on this machine) unless given.

    None rather than AUTO as the signature's default: sidjax is imported only inside, after the thread flags.
    """
    from sidjax.model.precision import AUTO

    default = default or AUTO
    parser.add_argument("--dtype", default=default, choices=DTYPES + (AUTO,),
                        help=f"{what} of both sides (parameters stay float32; default {default}); "
                             f"auto: what sidjax's 'auto' picks here")


def chosen_dtype(dtype: str) -> str:
    """`--dtype` with auto replaced by sidjax's choice for this machine, printed with the reason."""
    from sidjax.model import precision

    if dtype != precision.AUTO:
        return dtype
    chosen, reason = precision.auto_dtype()
    print(f"dtype auto -> {chosen}: {reason}", flush=True)
    return chosen


# ---------------------------------------------------------------- machine facts

@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    flags: dict[str, bool]  # MATMUL_FLAGS -> present (empty when /proc/cpuinfo is unreadable)
    xla_threads: int
    torch_threads: Optional[int]  # None: this script does not use torch


def cpu_model(text: str) -> str:
    return cpuinfo.model_name(text) or platform.processor() or "unknown"


def cpu_flags(text: str) -> dict[str, bool]:
    """Which of MATMUL_FLAGS the first CPU lists (they decide which matmul kernels run)."""
    present = cpuinfo.flags(text)
    return {} if present is None else {flag: flag in present for flag in MATMUL_FLAGS}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def xla_threads(xla_flags: str, cores: int) -> int:
    """XLA's CPU intra-op threads: one when its Eigen pool is off, else one per core."""
    return 1 if "--xla_cpu_multi_thread_eigen=false" in xla_flags.split() else cores


def machine() -> Machine:
    text = cpuinfo.read() or ""
    cores = usable_cores()
    torch = sys.modules.get("torch")
    return Machine(cpu_model=cpu_model(text), cores=cores, flags=cpu_flags(text),
                   xla_threads=xla_threads(os.environ.get("XLA_FLAGS", ""), cores),
                   torch_threads=torch.get_num_threads() if torch is not None else None)


def describe_cpu(m: Machine) -> str:
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in m.flags.items()) or "flags unknown"
    return f"machine: {m.cpu_model}, {m.cores} cores; {flags}"


def describe_machine(m: Machine) -> str:
    """The CPU and the thread counts each side ran with (what a ratio depends on besides the code)."""
    torch = "not used" if m.torch_threads is None else str(m.torch_threads)
    return f"{describe_cpu(m)}\nthreads: xla intra-op {m.xla_threads}, torch intra-op {torch}"


# ---------------------------------------------------------------- load

@dataclass(frozen=True)
class Load:
    before: tuple[float, float, float]  # 1/5/15-minute load averages
    after: tuple[float, float, float]
    peak: float  # highest 1-minute load average sampled while measuring (and at the end)
    cores: int

    @property
    def noisy(self) -> bool:
        """More runnable threads than cores: someone waited for a CPU, so times include waiting."""
        return self.peak > self.cores


class LoadSampler:
    """Samples the 1-minute load average every `interval_s` while the `with` block runs."""

    def __init__(self, cores: int, interval_s: float = 1.0,
                 loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg):
        self.cores, self.interval_s, self.loadavg = cores, interval_s, loadavg
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.load: Optional[Load] = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.loadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._before = tuple(self.loadavg())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        after = tuple(self.loadavg())
        self.load = Load(before=self._before, after=after, peak=max([*self.samples, after[0]]), cores=self.cores)


# ---------------------------------------------------------------- timing

def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> tuple[object, float]:
    """(fn's result, seconds) of one call that blocks until done: compile times, one-off costs."""
    start = clock()
    out = fn()
    return out, clock() - start


def interleave(*calls: Callable[[], object], repeats: int, warmup: int = 1,
               clock: Callable[[], float] = time.perf_counter,
               on_round: Optional[Callable[[int, list[float]], None]] = None) -> list[list[float]]:
    """Seconds of each call per round, calls run A B A B ... so load changes hit every side alike.

    Each call takes no argument and returns only when its work is done (block_until_ready).
    `warmup` untimed rounds come first (compilation, caches); `on_round(i, seconds)` reports progress.
    """
    if len(calls) < 2:
        raise ValueError(f"interleave needs at least two calls, got {len(calls)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for i in range(repeats):
        for call, bucket in zip(calls, times):
            bucket.append(timed(call, clock)[1])
        if on_round is not None:
            on_round(i, [bucket[-1] for bucket in times])
    return times


def repeat_count(text: str) -> int:
    """argparse type of a repeat count: an int >= MIN_REPEATS (fewer gives no usable spread)."""
    value = int(text)
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"need at least {MIN_REPEATS} repeats, got {value}")
    return value


# ---------------------------------------------------------------- summary

@dataclass(frozen=True)
class Spread:
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Spread":
        return cls(min(seconds), statistics.median(seconds), max(seconds))

    @property
    def relative(self) -> float:
        """(max - min) / median: how far one run can be from another."""
        return (self.max - self.min) / self.median


@dataclass(frozen=True)
class Comparison:
    """Side `a` (ours) against side `b` (the reference); ratio = b's median / a's median."""

    label: str
    a_name: str
    a: Spread
    b_name: str
    b: Spread
    repeats: int
    load: Load

    @property
    def ratio(self) -> float:
        return self.b.median / self.a.median

    @property
    def noisy(self) -> bool:
        return self.load.noisy


def summarize(label: str, a_name: str, a_times: Sequence[float], b_name: str, b_times: Sequence[float],
              load: Load) -> Comparison:
    if len(a_times) != len(b_times):
        raise ValueError(f"sides have {len(a_times)} and {len(b_times)} timings; interleaved runs pair them")
    return Comparison(label, a_name, Spread.of(a_times), b_name, Spread.of(b_times), len(a_times), load)


def measure(label: str, a_name: str, a: Callable[[], object], b_name: str, b: Callable[[], object], *,
            repeats: int, warmup: int = 1) -> Comparison:
    """Interleave `a` and `b` under a load sampler, printing each round, and summarize."""
    def progress(i: int, seconds: list[float]) -> None:
        print(f"  {label} round {i + 1}/{repeats}: {a_name} {seconds[0] * 1e3:.2f} ms, "
              f"{b_name} {seconds[1] * 1e3:.2f} ms", flush=True)

    with LoadSampler(usable_cores()) as sampler:
        a_times, b_times = interleave(a, b, repeats=repeats, warmup=warmup, on_round=progress)
    return summarize(label, a_name, a_times, b_name, b_times, sampler.load)


# ---------------------------------------------------------------- printing

def _loads(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def report(c: Comparison) -> str:
    """The human-readable lines of one comparison."""
    lines = [f"{c.label}: {c.repeats} interleaved repeats after warm-up (ms: min / median / max, spread)"]
    for name, s in ((c.a_name, c.a), (c.b_name, c.b)):
        lines.append(f"  {name:>14s} {s.min * 1e3:10.3f} {s.median * 1e3:10.3f} {s.max * 1e3:10.3f}"
                     f"   {s.relative:6.1%}")
    lines.append(f"  ratio of medians ({c.b_name} / {c.a_name}): {c.ratio:.3f}")
    lines.append(f"  load average before {_loads(c.load.before)}, after {_loads(c.load.after)}, peak "
                 f"{c.load.peak:.2f} on {c.load.cores} cores -> {'NOISY' if c.noisy else 'quiet'}")
    return "\n".join(lines)


def result_line(c: Comparison) -> str:
    """One `result: key=value ...` line holding the whole comparison (see `parse_result`)."""
    pairs = dict(label=c.label, a=c.a_name, a_min=c.a.min, a_median=c.a.median, a_max=c.a.max,
                 b=c.b_name, b_min=c.b.min, b_median=c.b.median, b_max=c.b.max, repeats=c.repeats,
                 load_before=_loads(c.load.before), load_after=_loads(c.load.after), peak_load=c.load.peak,
                 cores=c.load.cores, ratio=c.ratio, noisy="yes" if c.noisy else "no")
    return " ".join([_RESULT_PREFIX, *(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in pairs.items())])


def parse_result(output: str) -> Optional[Comparison]:
    """The comparison of the last `result:` line in a script's output, or None when there is none."""
    lines = [line for line in output.splitlines() if line.startswith(_RESULT_PREFIX)]
    if not lines:
        return None
    v = dict(_PAIR.findall(lines[-1]))
    try:
        load = Load(before=_floats3(v["load_before"]), after=_floats3(v["load_after"]),
                    peak=float(v["peak_load"]), cores=int(v["cores"]))
        return Comparison(label=v["label"], a_name=v["a"], a=_spread(v, "a"), b_name=v["b"], b=_spread(v, "b"),
                          repeats=int(v["repeats"]), load=load)
    except (KeyError, ValueError):
        return None


def _spread(values: dict[str, str], side: str) -> Spread:
    return Spread(*(float(values[f"{side}_{k}"]) for k in ("min", "median", "max")))


def _floats3(text: str) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in text.split("/"))
    return a, b, c


def finish(c: Comparison) -> None:
    """Print the headline comparison and end the script's output the way bench.all reads it."""
    print(report(c))
    print(result_line(c))
    print(f"speedup={c.ratio:.3f}")
