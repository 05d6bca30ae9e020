import textwrap

from bench import all as bench_all


def _write(directory, name, body):
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


def test_discovers_the_benchmark_scripts_only():
    names = bench_all.discover()
    assert {"rqvae", "lm_step", "beam_vs_hf", "grpo_step"} <= set(names)
    assert "all" not in names and "__init__" not in names


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
    assert good.speedup == 3.0 and good.error == ""
    assert crash.speedup is None and "exit 1" in crash.error and "boom" in crash.error
    assert silent.speedup is None and "speedup=" in silent.error
    rendered = bench_all.table([good, crash, silent])
    assert "| good | 3.00x |" in rendered and "| crash | – |" in rendered


def test_main_rejects_an_unknown_benchmark(capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench_all.main(["--only", "nope"])
    assert "nope" in capsys.readouterr().err
