"""The huge-page restart: when it happens, what it sets, and that the restarted program gets its arguments."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidjax.utils import hugepages

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("environ, glibc, thp, want", [
    ({}, (2, 36), "madvise", "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 35), "madvise",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", None),  # the user's own choice stays
    ({"SIDJAX_HUGE_PAGES": "0"}, (2, 36), "madvise", None),
    ({}, (2, 34), "madvise", None),  # glibc without the tunable
    ({}, None, "madvise", None),  # not glibc (musl, macOS)
    ({}, (2, 36), "always", None),  # the kernel already gives huge pages
    ({}, (2, 36), "never", None),
    ({}, (2, 36), None, None),  # no THP setting to read
])
def test_when_the_restart_adds_the_tunable(environ, glibc, thp, want):
    assert hugepages.tunables_with_huge_pages(environ, glibc, thp) == want


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(str(path)) == "madvise"
    assert hugepages.thp_mode(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("argv, module", [
    (["python", "-m", "experiments.train", "--config=c.py"], "experiments.train"),
    (["python3.11", "-X", "dev", "-u", "-m", "bench.all"], "bench.all"),
    (["python", "-mbench.lm_step"], "bench.lm_step"),
    (["python", "-m", "pytest", "-q"], "pytest"),
    (["python", "experiments/train.py"], None),
    (["python", "-c", "import experiments"], None),
    (["python"], None),
])
def test_main_module_of_a_command_line(argv, module):
    assert hugepages._main_module(argv) == module


def _run_program(tmp_path: Path, environ: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m pkg.show --flag=x y` for a package whose __init__ calls restart_for, as experiments/ does."""
    package = tmp_path / "pkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("from sidjax.utils import hugepages\nhugepages.restart_for(__name__)\n")
    (package / "show.py").write_text("import os, sys\nprint(os.environ.get('GLIBC_TUNABLES', ''))\n"
                                     "print(sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT)}
    env.update(environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    return subprocess.run([sys.executable, "-m", "pkg.show", "--flag=x", "y"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_program_restarts_with_the_tunable_where_it_helps(tmp_path):
    expected = hugepages.tunables_with_huge_pages({}, hugepages.glibc_version(), hugepages.thp_mode())
    result = _run_program(tmp_path, {})
    assert result.returncode == 0, result.stderr
    tunables, args = result.stdout.splitlines()
    assert args == "['--flag=x', 'y']"
    assert tunables == (expected or "")
    assert ("sidjax: restarting with GLIBC_TUNABLES" in result.stderr) == (expected is not None)


def test_the_opt_out_keeps_the_process_as_it_is(tmp_path):
    result = _run_program(tmp_path, {hugepages.OPT_OUT: "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "" and "restarting" not in result.stderr


def test_a_program_that_imports_the_apps_is_not_restarted(tmp_path):
    """pytest (or any other `python -m` program) importing experiments / bench keeps its process."""
    (tmp_path / "other.py").write_text("import os\nimport bench, experiments\nprint(os.environ.get('GLIBC_TUNABLES', ''))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT)}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{REPO}"
    result = subprocess.run([sys.executable, "-m", "other"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and "restarting" not in result.stderr
