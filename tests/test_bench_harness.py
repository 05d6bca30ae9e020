"""bench.harness on fake timings and fake machines: no timed assertions."""
import argparse
import itertools
import os

import pytest

from bench import harness

QUIET = harness.Load(before=(0.5, 0.4, 0.3), after=(1.5, 0.6, 0.4), peak=1.5, cores=2)


def test_spread_and_ratio_of_medians():
    c = harness.summarize("step", "ours", [0.3, 0.1, 0.2, 0.9, 0.2], "ref", [0.8, 0.4, 0.6, 0.6, 0.5], QUIET)
    assert (c.a.min, c.a.median, c.a.max) == (0.1, 0.2, 0.9)
    assert (c.b.min, c.b.median, c.b.max) == (0.4, 0.6, 0.8)
    assert c.ratio == pytest.approx(3.0)  # reference median / ours: > 1 means ours is faster
    assert c.a.relative == pytest.approx((0.9 - 0.1) / 0.2)
    assert c.repeats == 5


def test_summarize_rejects_unpaired_timings():
    with pytest.raises(ValueError, match="interleaved"):
        harness.summarize("step", "ours", [1.0, 2.0], "ref", [1.0], QUIET)


def test_noisy_only_when_the_load_exceeds_the_cores():
    at_capacity = harness.Load(before=(2.0, 2.0, 2.0), after=(2.0, 2.0, 2.0), peak=2.0, cores=2)
    over = harness.Load(before=(0.1, 0.1, 0.1), after=(0.1, 0.1, 0.1), peak=2.01, cores=2)
    assert not QUIET.noisy and not at_capacity.noisy and over.noisy
    c = harness.summarize("step", "ours", [1.0] * 5, "ref", [1.0] * 5, over)
    assert c.noisy


def test_interleave_runs_the_sides_in_turn_after_warmup():
    calls = []
    times = harness.interleave(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert [len(t) for t in times] == [3, 3]


def test_interleave_gives_each_side_its_own_durations():
    clock = itertools.count().__next__  # each reading one tick later; a side's call reads nothing itself
    ticks = iter([5, 1, 5, 1])  # clock readings inside the calls: a, b, a, b

    def work():
        for _ in range(next(ticks)):
            clock()

    a, b = harness.interleave(work, work, repeats=2, warmup=0, clock=clock)
    assert a == [6, 6] and b == [2, 2]


def test_interleave_reports_each_round_and_needs_two_calls():
    rounds = []
    harness.interleave(lambda: None, lambda: None, repeats=2, on_round=lambda i, s: rounds.append((i, len(s))))
    assert rounds == [(0, 2), (1, 2)]
    with pytest.raises(ValueError):
        harness.interleave(lambda: None, repeats=2)


def test_repeat_count_needs_at_least_five():
    assert harness.repeat_count("5") == 5
    with pytest.raises(argparse.ArgumentTypeError):
        harness.repeat_count("4")


def test_threads_flag_is_read_apart_from_the_scripts_options():
    assert harness.threads_from_argv(["--steps", "6", "--threads", "1", "--dtype", "bfloat16"]) == 1
    assert harness.threads_from_argv(["--threads=1"]) == 1
    assert harness.threads_from_argv(["--steps", "6"]) == 0
    with pytest.raises(SystemExit):
        harness.threads_from_argv(["--threads", "2"])


def test_single_thread_xla_flags_keep_existing_flags_and_do_not_repeat():
    flags = harness.single_thread_xla_flags("--xla_dump_to=/tmp/x")
    assert flags.split() == ["--xla_dump_to=/tmp/x", *harness.SINGLE_THREAD_XLA_FLAGS]
    assert harness.single_thread_xla_flags(flags) == flags
    assert harness.xla_threads(flags, cores=8) == 1 and harness.xla_threads("", cores=8) == 8


def test_dtype_flag_defaults_to_auto_and_auto_becomes_what_the_model_would_pick(monkeypatch, capsys):
    from sidjax.model import precision

    parser = argparse.ArgumentParser()
    harness.add_dtype_arg(parser, "compute dtype")
    assert parser.parse_args([]).dtype == precision.AUTO
    assert parser.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "float16"])
    assert harness.chosen_dtype("float32") == "float32" and capsys.readouterr().out == ""
    monkeypatch.setattr(precision, "auto_dtype", lambda: ("bfloat16", "backend cpu with avx512_bf16"))
    assert harness.chosen_dtype(precision.AUTO) == "bfloat16"
    assert capsys.readouterr().out == "dtype auto -> bfloat16: backend cpu with avx512_bf16\n"


def test_threads_before_jax_sets_the_xla_flags(monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench.x", "--threads", "1"])
    monkeypatch.setenv("XLA_FLAGS", "")
    assert harness.threads_before_jax(torch_too=False) == 1
    assert "--xla_cpu_multi_thread_eigen=false" in os.environ["XLA_FLAGS"].split()


def test_cpu_model_and_matmul_flags_from_cpuinfo():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n"
    assert harness.cpu_model(cpuinfo) == "AMD EPYC 9654"
    assert harness.cpu_flags(cpuinfo) == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False}
    assert harness.cpu_flags("") == {}
    m = harness.Machine("X", 2, harness.cpu_flags(cpuinfo), xla_threads=1, torch_threads=None)
    text = harness.describe_machine(m)
    assert "amx_bf16=no" in text and "xla intra-op 1" in text and "torch intra-op not used" in text


def test_load_sampler_takes_the_peak_while_measuring():
    readings = iter([(1.0, 1.0, 1.0), (4.0, 2.0, 1.0)])  # before, after (no sample: interval longer than the block)
    with harness.LoadSampler(cores=2, interval_s=60, loadavg=lambda: next(readings)) as sampler:
        pass
    assert sampler.load.before == (1.0, 1.0, 1.0) and sampler.load.after == (4.0, 2.0, 1.0)
    assert sampler.load.peak == 4.0 and sampler.load.noisy


def test_result_line_round_trips_and_the_report_names_noise():
    noisy = harness.Load(before=(3.5, 2.0, 1.0), after=(3.9, 2.2, 1.1), peak=3.9, cores=2)
    c = harness.summarize("beam50", "sidjax", [0.1, 0.12, 0.11, 0.1, 0.13], "transformers",
                          [7.2, 7.3, 7.6, 7.25, 7.4], noisy)
    line = harness.result_line(c)
    assert line.startswith("result: ") and "noisy=yes" in line
    back = harness.parse_result("other output\n" + line + "\nspeedup=66.0\n")
    assert back.label == "beam50" and back.a_name == "sidjax" and back.b_name == "transformers"
    assert back.a.median == pytest.approx(c.a.median) and back.b.max == pytest.approx(c.b.max)
    assert back.load == noisy and back.noisy and back.ratio == pytest.approx(c.ratio, rel=1e-5)
    assert "NOISY" in harness.report(c)
    assert harness.parse_result("speedup=1.0\n") is None
    assert harness.parse_result("result: label=x a=y\n") is None


def test_finish_ends_with_the_speedup_line(capsys):
    harness.finish(harness.summarize("s", "ours", [1.0] * 5, "ref", [2.0] * 5, QUIET))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "speedup=2.000" and lines[-2].startswith("result: ")
