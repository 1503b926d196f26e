"""The sandbox server: protocols, parameters, languages, faults, auth, CLI; the docs' client against it."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from nb_model.sandbox import SandboxServer, SimulatedEngine, start_sandbox
from nb_model.sandbox.engine import count_pieces
from nb_model.tokens import estimate_tokens


ROOT = Path(__file__).resolve().parents[2]


KEY = "sk-docs-" + "d" * 24


DOCS_CLIENT = '''
import json
import os
from concurrent.futures import ThreadPoolExecutor

import requests

API_URL = os.environ["API_URL"] + "/v1/generate"
HEADERS = {"Authorization": f"Bearer {os.environ['MODEL_API_KEY']}"}

# 基本调用
resp = requests.post(API_URL, headers=HEADERS, json={
    "prompt": "请用三句话介绍一下灯塔", "max_tokens": 200, "temperature": 0.7, "top_p": 0.9, "language": "zh"})
print("BASIC", resp.json()["output"])

# 流式输出
with requests.post(API_URL, headers={**HEADERS, "X-Stream": "true"},
                   json={"prompt": "请介绍一下潮汐"}, stream=True) as resp:
    print("STREAM ", end="")
    for line in resp.iter_lines(decode_unicode=True):
        if line:
            print(json.loads(line)["text"], end="", flush=True)
            print(type(line).__name__, end="\\x00", file=__import__("sys").stderr)
    print()

# 并发请求
def ask(prompt):
    r = requests.post(API_URL, headers=HEADERS, json={"prompt": prompt, "max_tokens": 64, "language": "zh"})
    return r.json()["output"]

prompts = ["灯塔", "冰川", "潮水", "火山", "指南针", "图书馆"]
with ThreadPoolExecutor(max_workers=4) as pool:
    for prompt, output in zip(prompts, pool.map(ask, prompts)):
        print("POOL", prompt, output)
'''


@pytest.fixture(params=["full", "minimal"])
def served(request):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NB_TEST_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "nb_model.cli", "serve", "--port", "0", "--api-key-env",
                             "NB_TEST_KEY", "--wire", request.param], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", proc.stdout.readline()).group(1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def whole(url, body):
    return requests.post(url + "/v1/generate", json=body, headers={"Authorization": f"Bearer {KEY}"},
                         timeout=10).json()["output"]


def test_docs_client_code_prints_the_answers(served, tmp_path):
    script = tmp_path / "docs_client.py"
    script.write_text(DOCS_CLIENT, encoding="utf-8")
    env = {**os.environ, "API_URL": served, "MODEL_API_KEY": KEY, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-500:]
    out = done.stdout.decode("utf-8")
    basic = whole(served, {"prompt": "请用三句话介绍一下灯塔", "max_tokens": 200, "temperature": 0.7,
                           "top_p": 0.9, "language": "zh"})
    assert "。" in basic and re.search(r"[\u4e00-\u9fff]{4}", basic)
    # the stream, decoded by requests from the declared charset, is the whole answer without mojibake
    streamed = whole(served, {"prompt": "请介绍一下潮汐"})
    pool = ["灯塔", "冰川", "潮水", "火山", "指南针", "图书馆"]
    pooled = [whole(served, {"prompt": p, "max_tokens": 64, "language": "zh"}) for p in pool]
    assert all(re.search(r"[\u4e00-\u9fff]{4}", o) for o in pooled)
    assert out == (f"BASIC {basic}\nSTREAM {streamed}\n"
                   + "".join(f"POOL {p} {o}\n" for p, o in zip(pool, pooled)))
    assert set(done.stderr.decode().split("\x00")) - {""} == {"str"}  # str lines, never bytes


def test_minimal_wire_sends_only_the_documented_fields(tmp_path):
    from nb_model.sandbox import start_sandbox
    server = start_sandbox(qps=0, wire="minimal")
    try:
        r = requests.post(server.url + "/v1/generate", json={"prompt": "介绍灯塔", "language": "zh"}, timeout=10)
        assert list(r.json()) == ["output"]
        assert set(r.headers) <= {"Content-Type", "Content-Length", "Server", "Date"}
        r = requests.post(server.url + "/v1/generate", json={"prompt": "介绍灯塔"}, headers={"X-Stream": "true"},
                          stream=True, timeout=10)
        lines = [json.loads(line) for line in r.iter_lines(decode_unicode=True) if line]
        assert all(list(obj) == ["text"] for obj in lines) and len(lines) > 5
        assert set(r.headers) <= {"Content-Type", "Transfer-Encoding", "Server", "Date"}
        assert r.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    finally:
        server.stop()


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe lighthouses"}]


@pytest.fixture(scope="module")
def shared():
    with SandboxServer(port=0, qps=0) as server:
        yield server


@pytest.fixture
def srv(shared):
    shared.reset()
    return shared


def seed(server, payload=None, headers=None, **kw):
    body = {"prompt": "Tell me about gardens", "max_tokens": 60, **(payload or {})}
    kw.setdefault("timeout", 10)
    return requests.post(server.url + "/v1/generate", json=body, headers=headers, **kw)


def chat(server, headers=None, **params):
    body = {"messages": CHAT, "max_tokens": 40, **params}
    return requests.post(server.url + "/v1/chat/completions", json=body, headers=headers,
                         timeout=10, stream=bool(params.get("stream")))


def ndjson_lines(response):
    return [json.loads(line) for line in response.iter_lines() if line]


def sse_events(response):
    """`data:` payloads of an SSE stream, decoded as UTF-8 by hand."""
    text = response.content.decode("utf-8")
    return [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]


def error_of(response):
    return response.json()["error"]


# -- protocols ------------------------------------------------------------------
def test_seed_non_streaming_reply(srv):
    r = seed(srv)
    assert r.status_code == 200
    assert re.fullmatch(r"req_[0-9a-f]+", r.headers["X-Request-Id"])
    body = r.json()
    assert body["model"] == "sandbox"
    assert body["output"].startswith("[sandbox] ")
    # the prompt by the shared estimator, the reply by its pieces (words and punctuation marks)
    assert body["usage"] == {"prompt_tokens": estimate_tokens("Tell me about gardens"),
                             "completion_tokens": count_pieces(body["output"])}
    assert body["finish_reason"] in ("stop", "length")


def test_seed_stream_matches_non_stream_and_flushes_early(srv):
    whole = seed(srv, {"max_tokens": 30}).json()
    r = seed(srv, {"max_tokens": 30}, headers={"X-Stream": "true", "X-Sandbox-Rate": "60"}, stream=True)
    assert r.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert r.headers["Transfer-Encoding"] == "chunked"
    start, stamps, lines = time.monotonic(), [], []
    for raw in r.iter_lines():
        stamps.append(time.monotonic() - start)
        lines.append(json.loads(raw))
    assert stamps[0] < stamps[-1] - 0.3  # 30 tokens at 60/s: the first arrives long before the last
    *pieces, final = lines
    assert all(set(p) == {"text"} for p in pieces)
    assert "".join(p["text"] for p in pieces) == whole["output"]
    assert final == {"text": "", "finish_reason": whole["finish_reason"], "usage": whole["usage"],
                     "model": "sandbox"}


def test_chat_non_streaming(srv):
    r = chat(srv)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and body["model"] == "sandbox"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("[sandbox]")
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + 40


def test_chat_stream_with_usage(srv):
    whole = chat(srv).json()
    r = chat(srv, stream=True, stream_options={"include_usage": True})
    assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]


def test_chat_stream_without_usage(srv):
    events = sse_events(chat(srv, stream=True))
    assert events[-1] == "[DONE]"
    assert "usage" not in json.loads(events[-2])


def test_legacy_completions(srv):
    url = srv.url + "/v1/completions"
    body = requests.post(url, json={"prompt": "Once upon", "max_tokens": 12}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "length"
    r = requests.post(url, json={"prompt": "Once upon", "max_tokens": 12, "stream": True})
    events = sse_events(r)
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == body["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_models_and_health(srv):
    assert requests.get(srv.url + "/health").json()["status"] == "ok"
    models = requests.get(srv.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["sandbox"]


def test_replies_name_the_requested_model(srv):
    assert seed(srv, {"model": "sandbox-seed"}).json()["model"] == "sandbox-seed"
    assert chat(srv, model="sandbox-chat").json()["model"] == "sandbox-chat"
    streamed = [json.loads(e) for e in sse_events(chat(srv, model="sandbox-chat", stream=True))[:-1]]
    assert {c["model"] for c in streamed} == {"sandbox-chat"}
    done = ndjson_lines(seed(srv, {"model": "sandbox-seed"}, headers={"X-Stream": "true"}, stream=True))[-1]
    assert done["model"] == "sandbox-seed"
    assert chat(srv).json()["model"] == "sandbox" and chat(srv, model="").json()["model"] == "sandbox"
    r = chat(srv, model=7)
    assert r.status_code == 400 and error_of(r)["message"] == "model must be a string"


def test_keep_alive_across_plain_and_streamed_replies(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    sock = None
    for headers in ({}, {"X-Stream": "true"}, {}):
        body = json.dumps({"prompt": "hi", "max_tokens": 5})
        conn.request("POST", "/v1/generate", body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        assert response.status == 200 and response.read()
        sock = sock or conn.sock
        assert conn.sock is sock  # same socket: the server kept the connection open
    conn.close()


# -- the engine's behaviour, seen through HTTP ------------------------------------
def output(server, **params):
    return seed(server, {"prompt": "Explain tides", "max_tokens": 80, **params}).json()["output"]


def test_determinism_and_parameter_effects(srv):
    hot = output(srv, temperature=1.5, seed=1)
    assert hot == output(srv, temperature=1.5, seed=1)  # byte for byte
    assert hot != output(srv, temperature=1.5, seed=2)  # the seed changes the draws
    greedy = output(srv, temperature=0)
    assert greedy != hot
    assert greedy == output(srv, temperature=0, seed=99)  # greedy ignores the seed
    assert output(srv, temperature=1.5, top_k=1) == greedy  # only the likeliest word is left
    assert output(srv, temperature=1.5, top_p=0.01) == greedy


def test_higher_temperature_reaches_rarer_words():
    engine = SimulatedEngine()

    def distinct(temperature):
        words = set()
        for s in range(5):
            text = "".join(engine.generate("Explain tides", max_tokens=200, temperature=temperature,
                                           top_p=1.0, top_k=None, language="en", seed=s))
            words |= set(re.findall(r"\w+", text.lower()))
        return len(words)

    assert distinct(0) < distinct(0.7) < distinct(1.5)


def test_languages(srv):
    french = output(srv, language="fr", temperature=0.8)
    assert re.search(r"\b(le|la|chaque|un|une)\b", french)
    texts = [output(srv, language=lang, max_tokens=300, temperature=1.2) for lang in ("fr", "de", "es")]
    assert all(any(ord(ch) > 127 for ch in t) for t in texts)
    r = seed(srv, {"prompt": "Explain tides", "language": "xx"})
    assert r.status_code == 400 and error_of(r)["message"] == \
        "unsupported language 'xx': use one of en, fr, de, es, zh"


def test_chinese_answers_read_as_chinese(srv):
    body = seed(srv, {"prompt": "请用几句话介绍灯塔和潮水", "language": "zh", "max_tokens": 300}).json()
    text = body["output"]
    assert text.startswith("[sandbox] ") and "。" in text
    rest = text[len("[sandbox] "):]
    assert not re.search(r"[A-Za-z]", rest) and " " not in rest.replace("\n\n", "")  # no English, no spaces
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in rest) > 0.8 * len(rest)
    assert "灯塔" in text or "潮水" in text  # nouns of the prompt, not English words pasted in
    assert body["usage"]["completion_tokens"] == sum(1 for ch in rest if not ch.isspace()) + 3  # one per character
    assert seed(srv, {"prompt": "介绍灯塔", "language": "zh-CN"}).json()["output"] == \
        seed(srv, {"prompt": "介绍灯塔", "language": "zh"}).json()["output"]


def test_chinese_prompt_is_counted_per_character(srv):
    r = seed(srv, {"prompt": "量" * 20000, "max_tokens": 10})
    assert r.status_code == 400 and "prompt (17001 tokens)" in error_of(r)["message"]


def test_natural_stop_and_length(srv):
    body = seed(srv, {"max_tokens": 2048}).json()
    assert body["finish_reason"] == "stop"
    assert 40 <= body["usage"]["completion_tokens"] <= 140
    body = seed(srv, {"max_tokens": 10}).json()
    assert body["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 10
    body = seed(srv, {"prompt": "Write a long essay on rivers", "max_tokens": 2048}).json()
    assert body["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2048


# -- validation, auth, rate limit ---------------------------------------------------
@pytest.mark.parametrize("payload, message", [
    ({"max_tokens": 2049}, "max_tokens must be between 1 and 2048"),
    ({"max_tokens": 0}, "max_tokens must be between 1 and 2048"),
    ({"temperature": 2.5}, "temperature must be between 0 and 2"),
    ({"top_p": 0}, "top_p must be greater than 0 and at most 1"),
    ({"prompt": None}, "'prompt' must be a string"),
])
def test_invalid_parameters(srv, payload, message):
    r = seed(srv, payload)
    assert r.status_code == 400
    assert error_of(r) == {"message": message, "type": "invalid_request_error"}


def test_bad_requests(srv):
    r = requests.post(srv.url + "/v1/generate", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in error_of(r)["message"]
    r = requests.post(srv.url + "/v1/generate", json={"max_tokens": 5})
    assert r.status_code == 400 and error_of(r)["message"] == "missing 'prompt'"
    r = requests.post(srv.url + "/v1/chat/completions", json={"max_tokens": 5})
    assert r.status_code == 400 and error_of(r)["message"] == "missing 'messages'"
    r = requests.get(srv.url + "/v2/nothing")
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Request-Id"].startswith("req_")
    r = seed(srv, {"prompt": "word " * 15000, "max_tokens": 2048})
    assert r.status_code == 400 and "context window of 16384 tokens" in error_of(r)["message"]


class SmallEngine(SimulatedEngine):
    """The simulated engine with a model's own context window, as `LlamaEngine(n_ctx=...)` has."""

    context_window = 64


def test_context_window_is_the_engines_unless_given():
    with SandboxServer(qps=0, engine=SmallEngine()) as server:
        assert server.context_window == 64
        r = seed(server, {"prompt": "Tell me about gardens", "max_tokens": 60})  # 5 + 60 > 64
        assert r.status_code == 400 and "context window of 64 tokens" in error_of(r)["message"]
        assert seed(server, {"max_tokens": 59}).status_code == 200
    assert SandboxServer(qps=0, engine=SmallEngine(), context_window=100).context_window == 100
    assert SandboxServer(qps=0).context_window == 16384


def test_auth():
    with SandboxServer(api_key="sk-secret-123", qps=0) as server:
        url = server.url + "/v1/generate"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-secret-123"}):
            r = requests.post(url, json={"prompt": "hi", "max_tokens": 3}, headers=headers)
            assert r.status_code == 401
            assert error_of(r) == {"message": "invalid or missing API key", "type": "authentication_error"}
        ok = requests.post(url, json={"prompt": "hi", "max_tokens": 3},
                           headers={"Authorization": "Bearer sk-secret-123"})
        assert ok.status_code == 200 and "sk-secret" not in ok.text
        assert requests.get(server.url + "/health").status_code == 200
        assert "sk-secret" not in repr(server)


def test_qps_limit():
    with SandboxServer(qps=20) as server:
        def fire(_):
            return requests.post(server.url + "/v1/generate", json={"prompt": "hi", "max_tokens": 1})

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(fire, range(40)))
        limited = [r for r in replies if r.status_code == 429]
        assert 5 <= len(limited) <= 20 and len(replies) - len(limited) >= 20
        assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
        assert error_of(limited[0])["message"] == "rate limit exceeded: 20 requests per second"
        assert server.wait_idle()["by_status"]["429"] == len(limited)


# -- fault injection ------------------------------------------------------------------
@pytest.mark.parametrize("spec, status", [("500", 500), ("502", 502), ("503", 503), ("401", 401),
                                          ("400", 400)])
def test_status_faults(srv, spec, status):
    r = seed(srv, headers={"X-Sandbox-Fault": spec})
    assert r.status_code == status and error_of(r)["message"].startswith("simulated")


def test_rate_limit_faults(srv):
    r = seed(srv, headers={"X-Sandbox-Fault": "429"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    r = seed(srv, headers={"X-Sandbox-Fault": "429-no-retry-after"})
    assert r.status_code == 429 and "Retry-After" not in r.headers and "retry-after-ms" not in r.headers
    r = seed(srv, headers={"X-Sandbox-Fault": "429-ms"})
    assert r.status_code == 429 and r.headers["retry-after-ms"] == "200" and "Retry-After" not in r.headers


def test_html_fault(srv):
    r = chat(srv, headers={"X-Sandbox-Fault": "html"})
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html")
    assert "<html>" in r.text


def test_cut_before(srv):
    r = seed(srv, headers={"X-Stream": "true", "X-Sandbox-Fault": "cut-before"}, stream=True)
    assert r.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(r.iter_lines())
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        seed(srv, headers={"X-Sandbox-Fault": "cut-before"})


def test_cut_after(srv):
    r = seed(srv, headers={"X-Stream": "true", "X-Sandbox-Fault": "cut-after:5"}, stream=True)
    lines = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in r.iter_lines():
            lines.append(json.loads(line))
    assert len(lines) == 5 and all("finish_reason" not in line for line in lines)
    r = chat(srv, stream=True, headers={"X-Sandbox-Fault": "cut-after:4"})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        r.content
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        seed(srv, headers={"X-Sandbox-Fault": "cut-after:4"})
    assert srv.wait_idle()["completed"] == 0


def test_stall_faults(srv):
    r = seed(srv, headers={"X-Stream": "true", "X-Sandbox-Fault": "stall:0.6"}, stream=True)
    start, stamps = time.monotonic(), []
    for _ in r.iter_lines():
        stamps.append(time.monotonic() - start)
    assert stamps[0] < 0.55 and stamps[1] - stamps[0] >= 0.5  # the silence came after the first token
    start = time.monotonic()
    assert seed(srv, headers={"X-Sandbox-Fault": "stall-before:0.4"}).status_code == 200
    assert time.monotonic() - start >= 0.4
    with pytest.raises(requests.exceptions.ReadTimeout):  # a client read timeout fires
        seed(srv, headers={"X-Sandbox-Fault": "stall:1"}, timeout=(2, 0.3))


def test_malformed_fault(srv):
    r = seed(srv, headers={"X-Stream": "true", "X-Sandbox-Fault": "malformed"}, stream=True)
    bad, good = [], []
    for line in r.iter_lines():
        try:
            good.append(json.loads(line))
        except ValueError:
            bad.append(line)
    assert len(bad) == 1 and good[-1]["finish_reason"] == "length"
    events = sse_events(chat(srv, stream=True, headers={"X-Sandbox-Fault": "malformed"}))
    assert "{not json" in events and events[-1] == "[DONE]"
    with pytest.raises(ValueError):
        seed(srv, headers={"X-Sandbox-Fault": "malformed"}).json()


def test_filter_fault(srv):
    body = seed(srv, headers={"X-Sandbox-Fault": "filter"}).json()
    assert body["finish_reason"] == "content_filter" and body["usage"]["completion_tokens"] == 8
    events = sse_events(chat(srv, stream=True, headers={"X-Sandbox-Fault": "filter"}))
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "content_filter"


def test_error_event_fault(srv):
    r = chat(srv, stream=True, headers={"X-Sandbox-Fault": "error-event"})
    assert r.status_code == 200
    events = sse_events(r)
    assert json.loads(events[-1]) == {"error": {"message": "simulated mid-stream error",
                                                "type": "server_error"}}
    assert "[DONE]" not in events
    assert chat(srv, headers={"X-Sandbox-Fault": "error-event"}).status_code == 500


def test_fault_queue_over_http(srv):
    url = srv.url + "/sandbox/faults"
    assert requests.post(url, json={"fault": "503", "times": 2}).status_code == 200
    requests.post(url, json={"fault": "429"})
    assert [seed(srv).status_code for _ in range(4)] == [503, 503, 429, 200]
    requests.post(url, json={"fault": "500", "times": 5})
    assert requests.delete(url).json() == {"cleared": 5}
    assert seed(srv).status_code == 200
    r = requests.post(url, json={"fault": "explode"})
    assert r.status_code == 400 and "unknown fault spec" in error_of(r)["message"]


def test_fault_queue_in_python(srv):
    srv.inject("502", times=2)
    assert [seed(srv).status_code for _ in range(3)] == [502, 502, 200]
    srv.inject("500")
    assert srv.clear_faults() == 1 and seed(srv).status_code == 200
    with pytest.raises(ValueError):
        srv.inject("nope")
    r = seed(srv, headers={"X-Sandbox-Fault": "nope"})
    assert r.status_code == 400


def test_stats_and_reset(srv):
    seed(srv, {"max_tokens": 7})
    seed(srv, {"max_tokens": 3}, headers={"X-Stream": "true"})
    seed(srv, {"max_tokens": 0})
    seed(srv, headers={"X-Sandbox-Fault": "503"})
    requests.get(srv.url + "/health")  # not a generation request
    srv.wait_idle()  # each handler records just after its reply
    stats = requests.get(srv.url + "/sandbox/stats").json()
    assert stats["requests"] == 4 and stats["completed"] == 2 and stats["tokens_out"] == 10
    assert stats["by_status"] == {"200": 2, "400": 1, "503": 1}
    srv.inject("500")
    assert requests.post(srv.url + "/sandbox/reset").status_code == 200
    assert srv.stats() == {"requests": 0, "by_status": {}, "completed": 0, "tokens_out": 0,
                           "faults_pending": []}


def test_client_disconnect_is_quiet(capfd):
    with SandboxServer(qps=0, token_rate=200) as server:
        r = seed(server, {"prompt": "a long essay", "max_tokens": 2048},
                 headers={"X-Stream": "true"}, stream=True)
        lines = r.iter_lines()
        next(lines), next(lines)
        r.close()
        time.sleep(0.2)
        assert seed(server, {"max_tokens": 3}).status_code == 200
        stats = server.wait_idle()
        assert stats["completed"] == 1 and stats["tokens_out"] < 2048 + 3
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_reset_forgets_requests_still_running():
    with SandboxServer(qps=0, token_rate=100) as server:
        r = seed(server, {"max_tokens": 20}, headers={"X-Stream": "true"}, stream=True)
        lines = r.iter_lines()
        next(lines)
        server.reset()  # the stream is still being sent
        assert len(list(lines)) >= 19
        assert server.wait_idle() == {"requests": 0, "by_status": {}, "completed": 0, "tokens_out": 0,
                                      "faults_pending": []}
        seed(server, {"max_tokens": 3})
        assert server.wait_idle()["by_status"] == {"200": 1}


def test_access_log_never_shows_the_key(capfd):
    with SandboxServer(api_key="sk-hidden-42", qps=0, quiet=False) as server:
        seed(server, {"max_tokens": 2}, headers={"Authorization": "Bearer sk-hidden-42"})
        seed(server, {"max_tokens": 2}, headers={"Authorization": "Bearer sk-wrong-99"})
    err = capfd.readouterr().err
    assert "POST /v1/generate" in err and "sk-hidden" not in err and "sk-wrong" not in err


def test_start_sandbox_helper():
    server = start_sandbox(qps=0, engine=SimulatedEngine(model="toy"))
    try:
        assert requests.get(server.url + "/v1/models").json()["data"][0]["id"] == "toy"
    finally:
        server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/health", timeout=2)


# -- command line -------------------------------------------------------------------------
def run_cli(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "nb_model.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_serve():
    proc = run_cli("serve", "--port", "0", "--api-key-env", "NB_TEST_KEY", env={"NB_TEST_KEY": "k-1"})
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"nb_model sandbox serving model 'sandbox' at (http://127\.0\.0\.1:\d+) "
                             r"\(seed: /v1/generate, openai: /v1/chat/completions\)\n", line)
        assert match, line
        url = match.group(1)
        assert requests.get(url + "/health", timeout=5).json()["status"] == "ok"
        assert requests.post(url + "/v1/generate", json={"prompt": "x"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and err == ""


def test_cli_errors_and_help():
    proc = run_cli("serve", "--engine", "gpt9")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2 and err.startswith("nb-model: unknown engine 'gpt9' (known: sandbox")
    assert err.count("\n") == 1
    proc = run_cli("--help")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "serve" in out


# -- the sandbox's own input checks -----------------------------------------------------------------------------
@pytest.fixture
def plain_sandbox():
    with SandboxServer(port=0, qps=0) as server:
        yield server


@pytest.mark.parametrize("spec", ["stall-before:inf", "stall-before:1e300", "stall:nan", "stall:1e9"])
def test_sandbox_refuses_absurd_fault_values_with_400(plain_sandbox, spec):
    import requests
    r = requests.post(plain_sandbox.url + "/v1/generate", json={"prompt": "hi", "max_tokens": 4},
                      headers={"X-Sandbox-Fault": spec}, timeout=10)
    assert r.status_code == 400 and "unknown fault spec" in r.json()["error"]["message"]


@pytest.mark.parametrize("length", ["abc", "-5", "1e3"])
def test_sandbox_answers_a_bad_content_length_with_400(plain_sandbox, length):
    port = int(plain_sandbox.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.0 400") or reply.startswith("HTTP/1.1 400"), reply[:200]
    assert "Content-Length" in reply


def test_a_long_stall_ends_when_the_client_leaves(plain_sandbox):
    import requests
    before = threading.active_count()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(plain_sandbox.url + "/v1/generate", json={"prompt": "hi", "max_tokens": 4},
                      headers={"X-Sandbox-Fault": "stall-before:3000"}, timeout=0.5)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before  # the handler's thread is gone, not asleep for 50 minutes
