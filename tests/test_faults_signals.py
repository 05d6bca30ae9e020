"""Faults: secrets never leave the environment; SIGKILL / SIGTERM at a seeded random point of the teacher,
SASRec and eval stages, then a relaunch, give exactly the outputs of an uninterrupted run.

(GRPO and S-DPO at the stage level: tests/test_rl_resume.py; SFT: tests/test_sft_stage.py.)
A killed run is a child process that patches one function to signal itself on its k-th call; the
relaunch runs here, and is compared byte for byte with an uninterrupted run.
"""
import functools
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from sidjax.configs import ConfigError, base_config, validate
from sidjax.data.sources import shipped_dir
from sidjax.sid.codes import read_sids
from sidjax.stages import DONE, run_pipeline
from sidjax.teacher.client import ClientSettings, ResponseCache, TeacherClient, TeacherError
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.settings import settings_from
from test_teacher_client import KEY_ENV, SECRET, _settings, server  # noqa: F401  (server: a fixture)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# The child's helper: signal this process on the k-th call of owner.name (before or after the call runs).
_KILL_AT = """
import os, signal, sys
sys.path[:0] = [{repo!r}, {tests!r}]

def kill_at(owner, name, count, sig, after):
    original = getattr(owner, name)
    calls = [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if not after and calls[0] == count:
            os.kill(os.getpid(), sig)
        result = original(*args, **kwargs)
        if after and calls[0] == count:
            os.kill(os.getpid(), sig)
        return result

    setattr(owner, name, patched)
"""


def _run_child(body: str, sig: int) -> subprocess.CompletedProcess:
    """Run `body` (after the kill_at helper) in a child process that must die of, or stop on, `sig`."""
    code = _KILL_AT.format(repo=str(REPO), tests=str(TESTS)) + body
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, timeout=300)
    if sig == signal.SIGKILL:
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    else:
        assert result.returncode == 1 and "SIGTERM" in result.stderr.splitlines()[-1], result.stderr[-3000:]
    return result


def _rows(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(step, metric names) of every metrics.jsonl row."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["step"], tuple(sorted(k for k in r if k not in ("step", "time")))) for r in rows]


# ---------------------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("value", ["sk-proj-Abc123def456Ghi789", "OPENAI-API-KEY", "my key",
                                   "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8", ""])
def test_api_key_env_must_be_a_variable_name_and_a_key_typed_there_is_never_echoed(value):
    config = base_config()
    config.teacher.api_key_env = value  # checked whatever the teacher kind: config.json records it
    with pytest.raises(ConfigError, match="config key 'teacher.api_key_env'") as error:
        validate(config)
    assert not value or value not in str(error.value).replace("api_key_env", "")
    config.teacher.api_key_env = "MY_TEACHER_KEY_2"
    validate(config)


def test_the_client_refuses_a_key_in_api_key_env_without_showing_it(tmp_path):
    settings = settings_from(ClientSettings, _settings(_FakeAddress(), api_key_env=SECRET))  # never validated
    cache = ResponseCache(tmp_path / "cache.jsonl")
    with pytest.raises(TeacherError, match="looks like an API key") as error:
        TeacherClient(settings, cache)
    cache.close()
    assert SECRET not in str(error.value)


class _FakeAddress:
    server_address = ("127.0.0.1", 9)


def test_a_launch_with_a_key_in_api_key_env_stops_before_writing_anything_and_never_shows_it(tmp_path):
    key = "sk-live-Zq9vX2mN4bT7rW1yK8pL3s"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=experiments/configs/demo.py",
         f"--workdir={tmp_path / 'run'}", f"--config.teacher.api_key_env={key}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0 and "teacher.api_key_env" in result.stderr
    assert key not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists(), "no config.json (or anything else) was written"


class _EchoServer(http.server.ThreadingHTTPServer):
    """A chat server that echoes the request's Authorization header back, in an error or in an answer."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.status = 401


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        echo = f"Authorization: {self.headers['Authorization']}"
        if self.server.status == 200:
            body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"Sure. You sent {echo}."}}]}
        else:
            body = {"error": {"message": f"bad request; headers were {echo}, api_key={SECRET}"}}
        data = json.dumps(body).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_server_that_echoes_the_authorization_header_leaks_the_key_into_no_error_log_or_file(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    echo = _EchoServer()
    threading.Thread(target=echo.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    cache = ResponseCache(tmp_path / "cache.jsonl")
    client = TeacherClient(settings_from(ClientSettings, _settings(echo, max_retries=1, max_reasks=1)), cache)
    try:
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(TeacherError, match="HTTP 401") as refused:  # not retried: the message is shown
                client.ask([{"role": "user", "content": "hi"}], lambda text: None)
            assert "[REDACTED]" in str(refused.value)
            echo.status = 500  # retried, warned about, then given up
            with pytest.raises(TeacherError, match="HTTP 500"):
                client.ask([{"role": "user", "content": "hi again"}], lambda text: None)
            echo.status = 200  # an answer that quotes the header: rejected (and logged), then cached
            assert client.ask([{"role": "user", "content": "hello"}], lambda text: "no") is None
            answer = client.ask([{"role": "user", "content": "hello there"}], lambda text: None)
    finally:
        client.close()
        cache.close()
        echo.shutdown()
        echo.server_close()
    assert answer.startswith("Sure. You sent Authorization: [REDACTED]")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry 1/1" in logged
    for text in (str(refused.value), logged, (tmp_path / "cache.jsonl").read_text()):
        assert SECRET not in text and "Bearer sk-" not in text


# ------------------------------------------------------------------------------------ teacher stage

_TEACHER_CHILD = """
import json
from sidjax.configs import base_config
from sidjax.stages import run_pipeline
from sidjax.teacher.client import ResponseCache
config = base_config()
config.stages = ("teacher",)
config.teacher.update(json.loads({teacher!r}))
kill_at(ResponseCache, "put", {count}, {sig}, after=True)
run_pipeline(config, {workdir!r})
"""


def _teacher_workdir(path: Path) -> Path:
    (path / "sids").mkdir(parents=True)
    np.save(path / "sids" / "sids.npy", read_sids(shipped_dir() / "Industrial_and_Scientific.index.json.gz", 3686))
    (path / "sids" / DONE).write_text(json.dumps({"summary": {}}))
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_teacher_stage_resumes_from_its_cache_without_asking_again_to_the_same_corpus(
        server, tmp_path, monkeypatch, sig):
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = base_config()
    config.stages = ("teacher",)
    # One request at a time: every answer the server sent before the kill is in the cache.
    config.teacher = _settings(server, max_items=3, max_users=2, user_splits=("train",), min_chars=60,
                               concurrency=1)
    validate(config)
    reference = _teacher_workdir(tmp_path / "reference")
    run_pipeline(config, reference)
    bought = len((reference / "teacher" / "cache.jsonl").read_text().splitlines())
    server.served.clear()

    count = int(np.random.default_rng(25 + sig).integers(1, bought))
    killed = _teacher_workdir(tmp_path / "killed")
    _run_child(_TEACHER_CHILD.format(teacher=config.teacher.to_json(), count=count, sig=int(sig),
                                     workdir=str(killed)), sig)
    assert not (killed / "teacher" / DONE).exists()
    assert count <= sum(server.served.values()) <= bought
    summary = run_pipeline(config, killed)["teacher"]
    assert summary["usage_cache_hits"] >= count
    assert len(server.served) == bought and set(server.served.values()) == {1}, "no prompt was bought twice"
    for name in ("items.jsonl", "users.jsonl", "manifest.json"):
        assert (killed / "teacher" / name).read_bytes() == (reference / "teacher" / name).read_bytes(), name
    assert SECRET not in (killed / "config.json").read_text() + (killed / "teacher" / "cache.jsonl").read_text()


# ------------------------------------------------------------------------------------------- SASRec

_SASREC_CHILD = """
from sidjax.baselines import sasrec
from sidjax.utils.metrics import MetricsWriter
from test_faults_signals import sasrec_fit
kill_at(sasrec, "evaluate", {count}, {sig}, after={after})
sasrec_fit({workdir!r})
"""


def sasrec_fit(workdir):
    """The tuned SASRec of tests/test_sasrec.py's next-item data, keeping its state in `workdir`."""
    from sidjax.baselines import sasrec
    from test_sasrec import NUM_ITEMS, _next_item_split, _settings as sasrec_settings

    c = sasrec_settings(max_epochs=5, patience=2)
    train, valid = _next_item_split(128, 0), _next_item_split(64, 1)
    with MetricsWriter(workdir) as writer:
        resume = None if workdir is None else Path(workdir) / "resume"
        return sasrec.tune(train, valid, NUM_ITEMS, c, ks=(1, 3), eval_batch_size=32, writer=writer,
                           resume_dir=resume)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_sasrec_fit_resumes_after_its_last_epoch_to_the_same_model_and_metrics_log(tmp_path, sig):
    best, trials = sasrec_fit(tmp_path / "reference")
    epochs = len(_rows(tmp_path / "reference" / "metrics.jsonl"))  # one evaluation per epoch, all trials
    rng = np.random.default_rng(250 + sig)
    count, after = int(rng.integers(1, epochs)), bool(rng.integers(2))
    result = _run_child(_SASREC_CHILD.format(count=count, sig=int(sig), after=after,
                                             workdir=str(tmp_path / "killed")), sig)
    if sig == signal.SIGTERM:
        assert "checkpoint saved, relaunch to resume" in result.stderr
    resumed, resumed_trials = sasrec_fit(tmp_path / "killed")
    assert resumed_trials == trials and resumed.curve == best.curve and resumed.best_epoch == best.best_epoch
    for a, b in zip(jax.tree.leaves(nnx.state(resumed.model)), jax.tree.leaves(nnx.state(best.model))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _rows(tmp_path / "killed" / "metrics.jsonl") == _rows(tmp_path / "reference" / "metrics.jsonl")


def test_sasrec_state_saved_by_other_settings_is_not_resumed(tmp_path):
    from sidjax.baselines import sasrec
    from test_sasrec import NUM_ITEMS, _next_item_split, _settings as sasrec_settings

    train, valid = _next_item_split(128, 0), _next_item_split(64, 1)
    fit = functools.partial(sasrec.fit, train, valid, NUM_ITEMS, dropout=0.0, ks=(1, 3), eval_batch_size=32)
    fit(sasrec_settings(max_epochs=2, patience=9), resume_dir=tmp_path)  # saved as finished after 2 epochs
    longer = sasrec_settings(max_epochs=3, patience=9)
    assert fit(longer, resume_dir=tmp_path).curve == fit(longer).curve


# --------------------------------------------------------------------------------------------- eval

_EVAL_CHILD = """
from sidjax.eval import evaluate
from sidjax.stages.preemption import sigterm_stops
from test_faults_signals import eval_run
kill_at({owner}, {name!r}, {count}, {sig}, after={after})
with sigterm_stops("eval", "progress kept"):  # what the eval stage's run() wraps it in
    eval_run({workdir!r}, {out!r})
"""
_EVAL_HOOKS = (("evaluate.Recommender", "search", False), ("evaluate._SplitProgress", "batch_done", False),
               ("evaluate._SplitProgress", "batch_done", True))


def eval_run(workdir, out):
    """Evaluate the saved bundle of tests/test_evaluate.py's toy model on valid and test, in batches of 2."""
    from sidjax.stages.eval import evaluate_bundle
    from test_evaluate import build

    dataset, _ = build()
    config = base_config()
    c = config.eval
    c.beams, c.topk, c.batch_size, c.splits = 4, (1, 4), 2, ("valid", "test")
    with MetricsWriter(out) as writer:
        return evaluate_bundle(Path(workdir) / "sft", config, dataset, Path(out), writer)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_eval_resumes_after_its_last_batch_to_the_same_metrics_and_samples(tmp_path, sig):
    from test_evaluate import _save_bundle, build

    _, rec = build()
    _save_bundle(tmp_path / "sft", rec, rec.model, rec.sids, base_config(), step=3)
    eval_run(tmp_path, tmp_path / "reference")
    searches = 2 * 7  # 13 samples per split in batches of 2
    rng = np.random.default_rng(2500 + sig)
    owner, name, after = _EVAL_HOOKS[int(rng.integers(len(_EVAL_HOOKS)))]
    count = int(rng.integers(1, searches))
    _run_child(_EVAL_CHILD.format(owner=owner, name=name, count=count, sig=int(sig), after=after,
                                  workdir=str(tmp_path), out=str(tmp_path / "killed")), sig)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    eval_run(tmp_path, tmp_path / "killed")
    for file in ("metrics.json", "valid.jsonl", "test.jsonl"):
        assert (tmp_path / "killed" / file).read_bytes() == (tmp_path / "reference" / file).read_bytes(), file
    assert _rows(tmp_path / "killed" / "metrics.jsonl") == _rows(tmp_path / "reference" / "metrics.jsonl")
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == sorted(
        p.name for p in (tmp_path / "reference").iterdir()), "no partial file or progress marker is left"


def test_a_marker_from_other_settings_is_not_resumed(tmp_path):
    from test_evaluate import _save_bundle, build

    _, rec = build()
    _save_bundle(tmp_path / "sft", rec, rec.model, rec.sids, base_config(), step=3)
    reference = eval_run(tmp_path, tmp_path / "reference")
    out = tmp_path / "stale"
    out.mkdir()
    marker = {"signature": {"split": "test"}, "batches": 5, "length": 0, "ranks": [0] * 10}
    (out / "test.progress.json").write_text(json.dumps(marker))
    (out / "test.jsonl.partial").write_text("")
    assert eval_run(tmp_path, out)["test"] == reference["test"]
