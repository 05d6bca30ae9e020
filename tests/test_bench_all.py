import textwrap

from bench import all as bench_all
from bench import harness


def _write(directory, name, body):
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


def _result_line(noisy_peak: float) -> str:
    load = harness.Load(before=(0.2, 0.2, 0.2), after=(0.4, 0.3, 0.2), peak=noisy_peak, cores=2)
    return harness.result_line(harness.summarize("step", "sidjax", [1.0, 1.1, 0.9, 1.0, 1.2], "pytorch",
                                                 [3.0, 3.3, 2.9, 3.0, 3.1], load))


def test_discovers_the_benchmark_scripts_only():
    names = bench_all.discover()
    assert {"rqvae", "lm_step", "beam_vs_hf", "grpo_step", "trie_scale"} <= set(names)
    assert not {"all", "__init__", "harness", "peaks"} & set(names)


def test_parse_speedup_reads_only_the_last_line():
    assert bench_all.parse_speedup("rollout_speedup=21.1\nspeedup=2.93\n\n") == 2.93
    assert bench_all.parse_speedup("speedup=2.0\ndone\n") is None
    assert bench_all.parse_speedup("") is None


def test_run_one_reports_ratio_failure_and_bad_output(tmp_path):
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _write(package, "good", "print('ours 1s, theirs 3s')\nprint('speedup=3.00')\n")
    _write(package, "crash", "import sys\nsys.exit('boom')\n")
    _write(package, "silent", "print('no ratio here')\n")
    good = bench_all.run_one("good", "fakebench", tmp_path, timeout_s=60)
    crash = bench_all.run_one("crash", "fakebench", tmp_path, timeout_s=60)
    silent = bench_all.run_one("silent", "fakebench", tmp_path, timeout_s=60)
    assert good.speedup == 3.0 and good.error == "" and good.result is None
    assert crash.speedup is None and "exit 1" in crash.error and "boom" in crash.error
    assert silent.speedup is None and "speedup=" in silent.error
    rendered = bench_all.table([good, crash, silent])
    assert "| good | 3.00x |" in rendered and "| crash | – |" in rendered


def test_the_table_shows_each_sides_spread_and_the_noisy_mark(tmp_path):
    package = tmp_path / "spreadbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _write(package, "quiet", f"print({_result_line(1.5)!r})\nprint('speedup=3.000')\n")
    _write(package, "loaded", f"print({_result_line(3.5)!r})\nprint('speedup=3.000')\n")
    quiet = bench_all.run_one("quiet", "spreadbench", tmp_path, timeout_s=60)
    loaded = bench_all.run_one("loaded", "spreadbench", tmp_path, timeout_s=60)
    assert quiet.result is not None and quiet.result.a.min == 0.9 and quiet.result.b.max == 3.3
    assert not quiet.result.noisy and loaded.result.noisy and loaded.error == ""
    rows = bench_all.table([quiet, loaded]).splitlines()
    assert rows[2] == ("| quiet | 3.00x | sidjax 900.0 / 1000.0 / 1200.0 | pytorch 2900.0 / 3000.0 / 3300.0 "
                       f"| 1.50 / 2 | no | {quiet.seconds:.0f} | ok |")
    assert "| 3.50 / 2 | noisy |" in rows[3]


def test_threads_one_is_passed_to_every_benchmark(tmp_path):
    package = tmp_path / "threadbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _write(package, "echo", "import sys\nprint('speedup=1.0' if sys.argv[1:] == ['--threads', '1'] else 'no')\n")
    assert bench_all.run_one("echo", "threadbench", tmp_path, timeout_s=60, threads=1).speedup == 1.0
    assert bench_all.run_one("echo", "threadbench", tmp_path, timeout_s=60).speedup is None


def test_main_rejects_an_unknown_benchmark(capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench_all.main(["--only", "nope"])
    assert "nope" in capsys.readouterr().err
