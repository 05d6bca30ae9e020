"""The LLM teacher against a real local chat-completions server that misbehaves on purpose."""
import hashlib
import http.server
import json
import re
import threading
from collections import Counter

import numpy as np
import pytest

from sidjax.configs import ConfigError, base_config, validate
from sidjax.configs import teacher as teacher_config
from sidjax.data.corpus import load_corpus, write_corpus
from sidjax.data.sources import shipped_dir
from sidjax.sid.codes import read_sids
from sidjax.stages import DONE, run_pipeline
from sidjax.teacher import prompts
from sidjax.teacher.client import BudgetExceeded, ClientSettings, ResponseCache, TeacherClient, TeacherError
from sidjax.teacher.llm import write_llm
from sidjax.utils.settings import settings_from
from test_tasks import tiny_dataset, tiny_item_sids

KEY_ENV = "SIDJAX_TEST_TEACHER_KEY"
SECRET = "sk-test-secret-value"
SID = re.compile(r"<a_\d+><b_\d+><c_\d+>")
FILLER = " The customer values durable, practical tools for regular workshop jobs and keeps buying related supplies."
BOUNDS = prompts.Bounds(min_chars=60, max_chars=2000)
# 8 items x 2 steps, 5 train users' analysts + 4 narratives (one user is rejected), 2 re-asks.
CONVERSATIONS = 8 * 2 + 5 + 4 + 2


def _answer(messages):
    """A well-behaved teacher: follows each prompt's rules (unless told to fail the first check)."""
    first = messages[1]["content"]
    if first.startswith("Here is an analysis"):  # item narrative: name the item by its SID only
        sid = SID.findall(first)[0]
        if len(messages) == 2 and "Charlie Tape" in first:
            return "Charlie Tape is a fine tape." + FILLER * 9  # breaks the rule once -> re-ask
        return f"Item {sid} is a workshop product." + FILLER * 9  # the ten sentences asked for
    if first.startswith("Products are known by identifiers"):  # user narrative
        history, target = first.split("and next bought ")
        return f"The customer bought {', '.join(SID.findall(history))}." + FILLER + f" The next item is {SID.match(target)[0]}."
    if first.startswith("A customer bought") and "bought next was" not in first:  # analyst without the target
        return f"After {SID.findall(first)[-1]} the customer needs a complementary product." + FILLER
    if first.startswith("A customer bought"):  # analyst reasoning; never fixable for Alpha Drill
        history, target = first.split("The product they bought next was ")
        title = target.split(": ", 1)[1].split(";")[0]
        if title == "Alpha Drill":
            return f"They will buy {title}." + FILLER
        cited = [s for s in SID.findall(history) if s != SID.match(target)[0]]  # a repeat may be named; avoid it
        return f"After {cited[-1]} the customer needs a complementary product." + FILLER
    return "This product is a dependable workshop tool." + FILLER  # item analysis


class ChatServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.attempts = Counter()  # conversation hash -> requests
        self.served = Counter()  # conversation hash -> good answers sent
        self.faults = Counter()  # kind -> times injected
        self.auth = set()
        self.refuse_all = None
        self.prompts = []  # the first user message of every request


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions"
        conversation = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
        with server.lock:
            server.requests += 1
            server.attempts[conversation] += 1
            attempt = server.attempts[conversation]
            server.auth.add(self.headers.get("Authorization"))
            server.prompts.append(next(m["content"] for m in body["messages"] if m["role"] == "user"))
        if server.refuse_all:
            return self._send(server.refuse_all, json.dumps({"error": {"message": "nope"}}))
        # The first request of every conversation fails in one of five ways (chosen by its hash).
        fault = int(conversation, 16) % 5 if attempt == 1 else 4
        with server.lock:
            server.faults[("429", "500", "timeout", "malformed", "ok")[fault]] += 1
        try:
            if fault == 0:
                return self._send(429, json.dumps({"error": {"message": "slow down"}}), [("Retry-After", "0.001")])
            if fault == 1:
                return self._send(500, json.dumps({"error": {"message": "boom"}}))
            if fault == 2:
                threading.Event().wait(1.0)  # longer than the client's timeout
                return self._send(200, "{}")
            if fault == 3:
                return self._send(200, '{"id": "x", "choices": [{"message": {"content": "trunc')
            content = _answer(body["messages"])
            with server.lock:
                server.served[conversation] += 1
            self._send(200, json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            }))
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server():
    s = ChatServer()
    thread = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.server_close()


def _settings(server, **overrides):
    c = teacher_config.section()
    c.update(dict(
        kind="openai", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="teacher-test", api_key_env=KEY_ENV,
        concurrency=4, timeout_s=0.3, max_retries=4, backoff_initial_s=0.001, backoff_max_s=0.002, max_reasks=1,
    ))
    c.update(overrides)
    return c


def _run(server, cache_path, explain_target=True, **overrides):
    dataset, sids = tiny_dataset(), tiny_item_sids()
    cache = ResponseCache(cache_path)
    client = TeacherClient(settings_from(ClientSettings, _settings(server, **overrides)), cache)
    try:
        user_rows = [("train", r) for r in range(len(dataset.splits["train"]))]
        return (write_llm(client, dataset, sids, range(dataset.num_items), user_rows, BOUNDS,
                          explain_target=explain_target), client.usage)
    finally:
        client.close()
        cache.close()


def test_faults_retried_every_prompt_cached_once_and_restart_is_free(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    cache_path = tmp_path / "cache.jsonl"
    (items, users), usage = _run(server, cache_path)
    dataset, sids = tiny_dataset(), tiny_item_sids()
    assert sorted(t.item for t in items) == list(range(8))
    # train row 3's target is Alpha Drill: its analyst always names it, so that user is rejected.
    assert sorted(u.index for u in users) == [0, 1, 2, 4]
    for t in items:
        assert t.sid == sids[t.item] and t.sid in t.narrative and dataset.items[t.item].title not in t.narrative
    for u in users:
        assert u.narrative.endswith(f"The next item is {sids[u.target]}.")
        assert dataset.items[u.target].title not in u.reasoning and sids[u.target] not in u.reasoning
    assert all(server.faults[kind] > 0 for kind in ("429", "500", "timeout", "malformed"))
    assert usage.retries == server.requests - CONVERSATIONS and usage.reasks == 2 and usage.rejected == 1
    assert server.auth == {f"Bearer {SECRET}"}

    keys = [json.loads(line)["key"] for line in cache_path.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(server.served) == CONVERSATIONS, "every completion stored exactly once"
    assert all(n == 1 for n in server.served.values()), "no conversation was answered twice"
    assert SECRET not in cache_path.read_text()

    before = server.requests
    (items2, users2), usage2 = _run(server, cache_path)
    assert server.requests == before, "a restarted run must not call the server again"
    assert usage2.requests == 0 and usage2.cache_hits == CONVERSATIONS and usage2.rejected == 1
    assert sorted(items2, key=lambda t: t.item) == sorted(items, key=lambda t: t.item)
    assert sorted(users2, key=lambda u: u.index) == sorted(users, key=lambda u: u.index)
    write_corpus(tmp_path / "corpus", items2, users2, {"teacher": "openai", "template": False})
    corpus = load_corpus(tmp_path / "corpus")
    assert not corpus.template and len(corpus.items) == 8 and SECRET not in (tmp_path / "corpus" / "users.jsonl").read_text()


def test_budget_stops_the_run_and_a_rerun_resumes_without_paying_twice(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    cache_path = tmp_path / "cache.jsonl"
    with pytest.raises(BudgetExceeded, match="budget of 12 requests spent") as stop:
        _run(server, cache_path, max_requests=12, concurrency=2)
    assert stop.value.setting == "max_requests"  # the stage names the config key from it
    assert server.requests == 12
    partial = len(cache_path.read_text().splitlines())
    assert 0 < partial < CONVERSATIONS
    (items, users), _ = _run(server, cache_path)
    assert len(items) == 8 and len(users) == 4
    assert len(cache_path.read_text().splitlines()) == CONVERSATIONS
    assert all(n == 1 for n in server.served.values()), "answers cached before the stop were never bought again"


def test_errors_that_must_not_be_retried(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    cache = ResponseCache(tmp_path / "cache.jsonl")
    with pytest.raises(TeacherError, match=KEY_ENV):
        TeacherClient(settings_from(ClientSettings, _settings(server)), cache)
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.refuse_all = 401
    client = TeacherClient(settings_from(ClientSettings, _settings(server)), cache)
    with pytest.raises(TeacherError, match="HTTP 401"):
        client.ask([{"role": "user", "content": "hi"}], lambda text: None)
    assert server.requests == 1
    server.refuse_all = 503
    with pytest.raises(TeacherError, match="HTTP 503, still failing after 4 retries"):
        client.ask([{"role": "user", "content": "hi"}], lambda text: None)
    assert server.requests == 1 + 5 and len(cache) == 0
    client.close()
    cache.close()


def test_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ResponseCache(path)
    cache.put({"key": "a", "text": "first"})
    cache.close()
    with path.open("a") as f:
        f.write('{"key": "b", "te')  # the process died mid-write
    cache = ResponseCache(path)
    assert cache.get("a")["text"] == "first" and cache.get("b") is None
    cache.put({"key": "b", "text": "second"})
    cache.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b"]
    path.write_text('{"key": "a", "text": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="cache.jsonl:2"):
        ResponseCache(path)


def test_teacher_stage_with_the_openai_kind_resumes_from_its_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = base_config()
    config.stages = ("teacher",)
    config.teacher = _settings(server, max_items=3, max_users=2, user_splits=("train",), min_chars=60)
    validate(config)
    (tmp_path / "sids").mkdir()
    np.save(tmp_path / "sids" / "sids.npy", read_sids(shipped_dir() / "Industrial_and_Scientific.index.json.gz", 3686))
    (tmp_path / "sids" / DONE).write_text(json.dumps({"summary": {}}))
    summary = run_pipeline(config, tmp_path)["teacher"]
    assert (summary["items"], summary["users"], summary["template"]) == (3, 2, False)
    assert summary["usage_requests"] == server.requests > 0
    corpus = load_corpus(tmp_path / "teacher")
    assert {t.source for t in corpus.items.values()} == {"llm:teacher-test"}
    before = server.requests
    config.redo = ("teacher",)
    summary = run_pipeline(config, tmp_path)["teacher"]
    assert server.requests == before and summary["usage_requests"] == 0 and summary["items"] == 3
    assert SECRET not in "".join(p.read_text() for p in (tmp_path / "teacher").iterdir() if p.is_file())
    assert SECRET not in (tmp_path / "config.json").read_text()


def test_without_the_target_the_analyst_never_sees_it_and_the_narrative_still_ends_on_it(server, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    (items, users), _ = _run(server, tmp_path / "cache.jsonl", explain_target=False)
    dataset, sids = tiny_dataset(), tiny_item_sids()
    train = dataset.splits["train"]
    assert len(items) == dataset.num_items and len(users) == len(train)  # Alpha Drill's analyst is no longer refused
    analysts = [p for p in server.prompts if p.startswith("A customer bought")]
    assert analysts and not any("bought next was" in p for p in analysts)
    by_history = {tuple(SID.findall(p.split("\n\n")[0])): p for p in analysts}  # the history is the first paragraph
    for user in users:
        history = train.history[user.index, : train.history_len[user.index]].tolist()
        prompt = by_history[tuple(sids[h] for h in history)]
        if user.target not in history:
            assert sids[user.target] not in prompt and dataset.items[user.target].title not in prompt
        assert user.reasoning.startswith(f"After {sids[history[-1]]} ")
        assert user.narrative.endswith(f"The next item is {sids[user.target]}.")
    narratives = [p for p in server.prompts if p.startswith("Products are known by identifiers")]
    assert narratives and all("An analyst who saw only the history reasoned like this:" in p for p in narratives)


def test_config_section_names_the_bad_key():
    for key, value, message in [
        ("kind", "anthropic", "teacher.kind"),
        ("user_splits", ("train", "train"), "teacher.user_splits"),
        ("base_url", "localhost:8000", "teacher.base_url"),
        ("concurrency", 0, "teacher.concurrency"),
        ("backoff_initial_s", 100.0, "teacher.backoff_initial_s"),
    ]:
        config = base_config()
        config.teacher.kind = "openai"
        config.teacher[key] = value
        with pytest.raises(ConfigError, match=message):
            validate(config)
