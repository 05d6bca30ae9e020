"""Faults around the workdir and the launch: each injected, each answered by one clear line before work is lost.

Two launches on one workdir, a stale lock, a relaunch with a changed config, an eval prompt longer than
the model's positions, paper SIDs that do not match `sids.levels` / `sids.codebook_size`, an unknown
item id mid-history, a user error's one line / exit code / traceback, and a full disk's noise.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments import exits
from sidjax.configs import ConfigError, base_config
from sidjax.data import minionerec
from sidjax.data.dataset import Item, RecDataset, Split
from sidjax.stages import DONE, run_pipeline
from sidjax.stages import launch_checks
from sidjax.stages.lock import LOCK_FILE, WorkdirBusy, workdir_lock
from sidjax.utils.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _launch(workdir, *flags, module="experiments.train", config="experiments/configs/demo.py"):
    return subprocess.run(
        [sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def _error_line(result) -> str:
    """The last stderr line, which must be the only `error:` line."""
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr[-3000:]
    return lines[-1]


# ---- one owner per workdir -----------------------------------------------------------------------------------


def test_a_second_launch_is_refused_naming_the_holder(tmp_path):
    with workdir_lock(tmp_path):
        result = _launch(tmp_path, "--config.stages=('data',)")
    assert result.returncode == exits.USER_ERROR_EXIT
    line = _error_line(result)
    assert line.startswith(f"error: workdir {tmp_path} is in use by pid {os.getpid()} on {socket.gethostname()} "
                           f"(since "), line
    assert "use another --workdir" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "the refused launch ran no stage"
    assert (tmp_path / LOCK_FILE).read_text() == "", "the lock is released (and its record cleared) on exit"


def test_a_held_lock_refuses_in_process_too(tmp_path):
    with workdir_lock(tmp_path):
        with pytest.raises(WorkdirBusy, match=f"in use by pid {os.getpid()}"):
            run_pipeline(_data_config(), tmp_path)


def test_a_stale_lock_of_a_dead_process_is_named_and_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    record = {"pid": pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))  # left behind: no process holds its flock
    with workdir_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    assert f"taking over a stale lock of pid {pid} on {socket.gethostname()} (since 2026-01-01T00:00:00+00:00)" \
        in caplog.text


# ---- config fingerprints -------------------------------------------------------------------------------------


def _data_config():
    config = base_config()
    config.stages = ("data",)
    return config


def _markov_config():
    config = base_config()
    config.stages = ("data", "markov", "baselines")
    config.baselines.methods = ("markov",)
    return config


def test_a_changed_config_is_refused_naming_keys_and_entries_then_redone(tmp_path):
    run_pipeline(_markov_config(), tmp_path)
    saved = (tmp_path / "config.json").read_text()
    markov_done = json.loads((tmp_path / "markov" / DONE).read_text())
    assert markov_done["inputs"]["baselines.markov.decay"] == 0.5 and len(markov_done["fingerprint"]) == 16

    changed = _markov_config()
    changed.baselines.markov.decay = 0.25
    changed.data.max_history = 5
    with pytest.raises(ConfigError) as refused:
        run_pipeline(changed, tmp_path)
    message = str(refused.value)
    assert "baselines.markov.decay 0.5 -> 0.25 (affects markov, baselines)" in message
    assert "data.max_history 10 -> 5 (affects data, markov, baselines)" in message
    assert """--config.redo="('data', 'markov', 'baselines')\"""" in message
    assert (tmp_path / "config.json").read_text() == saved, "config.json still describes the outputs on disk"

    same = _markov_config()
    same.redo = ("markov",)  # baselines scores markov's model: it must be redone too
    with pytest.raises(ConfigError, match=r"'baselines' uses 'markov', which runs again.*"
                                          r"""--config.redo="\('markov', 'baselines'\)\""""):
        run_pipeline(same, tmp_path)
    assert (tmp_path / "config.json").read_text() == saved

    changed.data.max_history = 10
    changed.redo = ("markov", "baselines")
    summaries = run_pipeline(changed, tmp_path)
    assert summaries["baselines"]["markov"]["valid"] == summaries["markov"]["valid"]
    assert json.loads((tmp_path / "markov" / DONE).read_text())["inputs"]["baselines.markov.decay"] == 0.25
    assert json.loads((tmp_path / "config.json").read_text())["baselines"]["markov"]["decay"] == 0.25
    changed.redo = ()
    run_pipeline(changed, tmp_path)  # the same config again: everything is finished, nothing is refused


def test_a_knob_added_after_an_entry_was_made_counts_only_away_from_its_default(tmp_path):
    run_pipeline(_markov_config(), tmp_path)
    done = tmp_path / "markov" / DONE
    record = json.loads(done.read_text())
    del record["inputs"]["data.split"]  # as written by a sidjax without that knob
    done.write_text(json.dumps(record))
    run_pipeline(_markov_config(), tmp_path)  # at its default: the entry stands
    moved = _markov_config()
    moved.data.split = "leave_one_out"
    with pytest.raises(ConfigError, match=r"data.split \(unset\) -> 'leave_one_out' \(affects markov\)"):
        run_pipeline(moved, tmp_path)


# ---- launch-time checks --------------------------------------------------------------------------------------


def _long_history_data(directory: Path, length: int = 1000) -> Path:
    """A recbole dataset whose one user has a history of `length` items (and 3-level paper SIDs)."""
    n = length + 3
    items = tuple(Item(title=f"item {i}") for i in range(n))
    rows = {s: [(0, list(range(length + k)), length + k)] for k, s in enumerate(("train", "valid", "test"))}
    splits = {s: Split.from_rows(r, n) for s, r in rows.items()}
    sids = {i: (f"<a_{i // 100}>", f"<b_{i // 10 % 10}>", f"<c_{i % 10}>") for i in range(n)}
    minionerec.write_recbole_dir(RecDataset("Long", items, {0: tuple(range(n))}, splits, paper_sids=sids), directory)
    return directory


def test_an_eval_prompt_longer_than_the_model_is_refused_at_launch(tmp_path):
    data = _long_history_data(tmp_path / "long")
    result = _launch(tmp_path / "run", "--config.data.source=recbole", f"--config.data.path={data}",
                     "--config.data.name=Long", "--config.data.max_history=1000",
                     "--config.stages=('data','sids','teacher','sft','eval:sft')")
    assert result.returncode == exits.USER_ERROR_EXIT
    assert _error_line(result) == (
        "error: config key 'data.max_history': the longest 'valid' history has 1000 items, so a prompt of "
        "'eval:sft' is at least 4002 tokens with its answer, over the 512 positions of the model "
        "(model.preset 'tiny'); set data.max_history to at most 127")
    assert not (tmp_path / "run" / "data").exists(), "no stage ran"


def test_a_standalone_eval_is_not_refused_for_pipeline_entries_it_does_not_run(tmp_path):
    # industrial_smollm2's entries["eval:sft"] sets direct mode, where several thought paths are invalid;
    # `experiments.eval` runs config.eval alone, so it gets as far as looking for its model.
    result = _launch(tmp_path / "run", "--config.eval.mode=reasoning", "--config.eval.think_temperature=1.0",
                     "--config.eval.think_paths=4", "--config.eval.models=('grpo',)", module="experiments.eval",
                     config="experiments/configs/industrial_smollm2.py")
    assert result.returncode == exits.USER_ERROR_EXIT
    assert _error_line(result) == (f"error: {tmp_path / 'run' / 'grpo'}: neither a model bundle (bundle.json) "
                                   "nor a run directory (config.json)")


def test_paper_sids_that_do_not_match_the_config_are_refused_before_any_stage(tmp_path):
    result = _launch(tmp_path, "--config.sids.levels=4")
    assert result.returncode == exits.USER_ERROR_EXIT
    line = _error_line(result)
    assert line.startswith("error: ") and line.endswith("SIDs have 3 levels but config key 'sids.levels' is 4"), line
    assert not (tmp_path / "data").exists(), "the data stage (and any paid teacher) did not run first"
    config = base_config()
    config.stages = ("data", "sids")
    config.sids.codebook_size = 100
    with pytest.raises(DataError, match=r"index\.json\.gz: item 0: code 236 at level 0 >= config key 'sids.codebook_size' \(100\)"):
        launch_checks.check(config, tmp_path, config.stages)


def test_an_unknown_item_id_mid_history_is_named_at_its_own_line(tmp_path):
    header = ",".join(minionerec.CSV_COLUMNS[:5])
    rows = {"train": ["A1,\"['t0']\",t1,[0],1", "A2,\"['t2']\",t3,[2],3", "A1,\"['t0', 't1']\",t2,\"[0, 1]\",2"],
            "valid": ["A1,\"['t0', 't1', 't2']\",t3,\"[0, 77, 2]\",3"],
            "test": ["A1,\"['t1', 't2', 't3']\",t0,\"[1, 2, 3]\",0"]}
    for split, lines in rows.items():
        (tmp_path / split).mkdir()
        (tmp_path / split / "Shop_5.csv").write_text("\n".join([header, *lines]) + "\n")
    with pytest.raises(DataError, match=r"valid/Shop_5\.csv:2: field 'history_item_id': unknown item id 77 "
                                        r"\(the CSVs name 5 distinct items, so ids are 0\.\.4\)"):
        minionerec.load_csv_dir(tmp_path, "Shop", 3)


# ---- one line per user error ---------------------------------------------------------------------------------


def test_a_user_error_is_one_line_with_exit_code_2_and_the_traceback_behind_verbose(tmp_path):
    flags = ("--config.stages=('data',)", "--config.data.source=recbole", f"--config.data.path={tmp_path / 'none'}")
    quiet = _launch(tmp_path / "run", *flags)
    assert quiet.returncode == exits.USER_ERROR_EXIT
    line = _error_line(quiet)
    assert line.startswith(f"error: {tmp_path / 'none'}") and "file not found" in line, line
    assert "Traceback" not in quiet.stderr
    log = (tmp_path / "run" / exits.LOG_FILE).read_text()
    assert "Traceback" in log and "file not found" in log, "the traceback is always in the run's log"
    verbose = _launch(tmp_path / "run", *flags, "--verbose")
    assert verbose.returncode == exits.USER_ERROR_EXIT
    assert "Traceback" in verbose.stderr and _error_line(verbose) == line


def _launch_with_data_stage(script: str, stage: str, workdir) -> subprocess.CompletedProcess:
    """Run `experiments.train` on the demo config's `data` entry alone, with `script`'s function `stage` as it."""
    launch = textwrap.dedent(f"""
        import sys
        from sidjax.stages import registry
        registry.STAGES["data"] = {stage}
        from experiments import train
        sys.argv = ["train", "--config=experiments/configs/demo.py", "--workdir={workdir}",
                    "--config.stages=('data',)"]
        train.run(train.main)
    """)
    return subprocess.run([sys.executable, "-c", script + launch], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_a_full_disk_is_one_line_not_a_hundred_tracebacks(tmp_path):
    # What a checkpoint save on a full disk does (seen with orbax on a full tmpfs): every pending write's
    # completion reports "Event loop is closed" from native code, each failed background thread logs its
    # error with a traceback, and the save's error arrives wrapped.
    script = textwrap.dedent("""
        import errno, logging

        class PendingWrite:
            def __del__(self):
                raise RuntimeError("Event loop is closed")

        def full_disk(ctx):
            path = str(ctx.dir / "statistics.json")
            full = OSError(errno.ENOSPC, "No space left on device", path)
            for _ in range(100):
                PendingWrite()
            for _ in range(5):
                record = logging.makeLogRecord(dict(name="orbax", levelno=logging.ERROR, levelname="ERROR",
                                                    pathname="/site-packages/orbax/checkpoint/future.py",
                                                    msg="background save raised", exc_info=(OSError, full, None)))
                logging.getLogger().handle(record)
            raise RuntimeError("the async save failed") from full
    """)
    result = _launch_with_data_stage(script, "full_disk", tmp_path)
    assert result.returncode == exits.USER_ERROR_EXIT
    assert _error_line(result) == (f"error: the disk is full writing {tmp_path / 'data' / 'statistics.json'} "
                                   f"(No space left on device); free space or use another --workdir")
    assert "Event loop is closed" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("background save raised") == 5, "the library's error lines stay, one line each"
    log = (tmp_path / exits.LOG_FILE).read_text()
    assert "RuntimeError: the async save failed" in log and log.count("OSError: [Errno 28]") >= 5


def test_preempted_is_its_own_line_and_exit_code(tmp_path):
    script = textwrap.dedent("""
        from sidjax.train.loop import Preempted

        def preempted(ctx):
            raise Preempted("sft", 7)
    """)
    result = _launch_with_data_stage(script, "preempted", tmp_path)
    assert result.returncode == exits.PREEMPTED_EXIT
    assert result.stderr.strip().splitlines()[-1] == \
        "preempted: sft: SIGTERM at step 7; checkpoint saved, relaunch to resume"
    assert "Traceback" not in result.stderr
