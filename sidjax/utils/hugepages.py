"""Transparent huge pages for the large host buffers of XLA (and PyTorch), by restarting the program once.

glibc's malloc maps every block over 32 MB afresh and unmaps it when it is freed. XLA:CPU allocates a
jitted step's temporaries and outputs (logits, activations) that way on every call, so every step
faults each of their 4 KiB pages in again: 300 SFT steps of the demo took 13.1 M page faults and spent
28 s of their 97 CPU-seconds in the kernel. With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc 2.35
and later) malloc asks for transparent huge pages on those maps, 512 x fewer faults: 0.4 M faults, and
the stage ran in 40 s instead of 52, with the same losses (docs/results/log.md).

glibc reads the tunable only when a process starts, so `python -m experiments.<app>` and
`python -m bench.<script>` re-execute themselves once with it, before anything heavy is imported, where
it helps: Linux with glibc >= 2.35 and transparent huge pages in `madvise` mode (in `always` mode the
kernel already gives them; in `never` nothing can). `SIDJAX_HUGE_PAGES=0` turns the restart off.
Library users (`sidjax.load` in a notebook) can set the variable themselves before starting Python.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"
OPT_OUT = "SIDJAX_HUGE_PAGES"  # "0": never restart
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library this Python runs on; None where it is not glibc."""
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (ValueError, OSError):
        return None


def thp_mode(path: str = THP_MODE) -> str | None:
    """The bracketed choice of the kernel's THP setting ("always", "madvise", "never"); None if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def tunables_with_huge_pages(environ: Mapping[str, str], glibc: tuple[int, int] | None,
                             thp: str | None) -> str | None:
    """The GLIBC_TUNABLES value to restart with; None where the restart is off, done, or would not help."""
    current = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT) == "0" or TUNABLE in current:
        return None
    if glibc is None or glibc < MIN_GLIBC or thp != "madvise":
        return None
    return f"{current}:{SETTING}" if current else SETTING


def _main_module(argv: list[str]) -> str | None:
    """The module of a `python [options] -m <module> ...` command line; None for a script, `-c` or stdin."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-X", "-W"):  # options with a separate value
            i += 2
        elif arg.startswith("-") and arg not in ("-", "-c") and not arg.startswith("-c"):
            i += 1
        else:
            return None
    return None


def restart_for(package: str) -> None:
    """Re-execute this process with huge pages on (see the module docstring) if it is `python -m <package>.<x>`.

    Call it from `package`'s `__init__`, which runs before the program's own imports. Anything else
    (pytest importing the package, a notebook) is left alone.
    """
    module = _main_module(getattr(sys, "orig_argv", []))
    if module is None or not module.startswith(package + "."):
        return
    tunables = tunables_with_huge_pages(os.environ, glibc_version(), thp_mode())
    if tunables is None:
        return
    print(f"sidjax: restarting with GLIBC_TUNABLES={tunables} (huge pages for large buffers: fewer page faults; "
          f"{OPT_OUT}=0 turns this off)", file=sys.stderr, flush=True)
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "GLIBC_TUNABLES": tunables})
