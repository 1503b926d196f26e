"""The kernel side under hostile input: unencodable text, names `--out` must not take, streams cut short with
the cache on, pacing, a server asking for an hour's wait, and the sandbox's own input checks. Real magic,
real HTTP: the sandbox, and minimal servers written here from the seed API's documented examples."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import notices, run, run_interrupted
from nb_model.sandbox import SandboxServer


class SeedServer:
    """The documented seed API in a few lines: `POST /v1/generate` -> {"output": ...}; records raw bodies.
    `status`/`headers` make every reply an error instead (e.g. 429 with Retry-After)."""

    def __init__(self, status: int = 200, headers: dict | None = None):
        self.bodies: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.bodies.append(raw)
                if status == 200:
                    out = json.dumps({"output": "Tides follow the moon."}).encode()
                else:
                    out = json.dumps({"error": {"message": "slow down"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def seed_server():
    server = SeedServer()
    yield server
    server.close()


@pytest.fixture
def cache_on(monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")


def _entries() -> int:
    from nb_model.cache.router import local_store
    return local_store().stats()["entries"]


# -- lone surrogates ------------------------------------------------------------------------------------

def test_a_lone_surrogate_in_a_cell_is_sent_as_u_fffd_with_one_line(shell, seed_server, use_endpoint, cache_on):
    use_endpoint(seed_server)
    shell.user_ns["name"] = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    cell = "%%generate --no-stream -o g\nSummarize the file {name}"
    results = [run(shell, cell) for _ in range(2)]
    assert all(res.success for res, _ in results), results[0][1].stderr
    assert all("Traceback" not in cap.stderr + cap.stdout for _, cap in results)
    said = [n for _, cap in results for n in notices(cap)]
    assert len(said) == 1 and "sent as U+FFFD" in said[0] and "\n" not in said[0], said
    assert len(seed_server.bodies) == 1 and shell.user_ns["g"].cached  # stored and replayed
    sent = json.loads(seed_server.bodies[0].decode("utf-8"))  # strict UTF-8
    assert sent["prompt"] == "Summarize the file caf\ufffd.txt"


def test_python_api_with_a_lone_surrogate(seed_server, use_endpoint, cache_on):
    import nb_model
    use_endpoint(seed_server)
    gen = nb_model.generate("x \udce9")
    again = nb_model.generate("x \udce9")
    assert gen.text == again.text and again.cached and len(seed_server.bodies) == 1
    assert json.loads(seed_server.bodies[0].decode("utf-8"))["prompt"] == "x \ufffd"


def test_cache_keys_and_storage_never_raise_on_odd_text(tmp_path):
    from nb_model.cache.keys import cache_key
    from nb_model.cache.sqlite_store import open_sqlite
    from nb_model.results import Generation
    assert cache_key({"prompt": "\udce9"}) != cache_key({"prompt": "\ufffd"})
    warnings = []
    store = open_sqlite(tmp_path / "c.sqlite", warnings.append)
    store.store("k", Generation(text="\ud800 text", model="m"), "head \udce9")  # one warning, no traceback
    assert len(warnings) <= 1 and all("\n" not in w for w in warnings)
    store.close()


# -- --out names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["_", "__", "___", "_i", "_ii", "_iii", "_i3", "_3", "_oh", "_ih", "_dh", "In",
                                  "Out", "get_ipython", "exit", "quit", "print", "list", "__name__"])
def test_out_refuses_ipythons_and_pythons_own_names_in_one_line(shell, seed_server, use_endpoint, name):
    use_endpoint(seed_server)
    before = shell.user_ns.get(name, "absent")
    res, cap = run(shell, f"%%generate -o {name}\nTell me about tides")
    assert not res.success and "Traceback" not in cap.stdout
    message = str(res.error_in_exec)
    assert "\n" not in message and f"--out {name}" in message and "pick another name" in message, message
    assert seed_server.bodies == [] and shell.user_ns.get(name, "absent") is before
    assert run(shell, "get_ipython() is not None")[0].result is True  # the shell still works


def test_out_still_takes_ordinary_names(shell, seed_server, use_endpoint):
    use_endpoint(seed_server)
    res, _ = run(shell, "%%generate --no-stream -o _answer\nTell me about tides")
    assert res.success and shell.user_ns["_answer"].text == "Tides follow the moon."


# -- incomplete answers are never cached ------------------------------------------------------------------

@pytest.fixture
def slow(use_endpoint):
    with SandboxServer(port=0, qps=0, token_rate=30) as server:
        use_endpoint(server)
        yield server


def test_a_stream_closed_early_is_not_cached(slow, cache_on):
    import nb_model
    stream = nb_model.stream("write a long essay about tides", max_tokens=300)
    got = []
    for piece in stream:
        got.append(piece)
        if len(got) == 5:
            stream.close()
    assert stream.generation.finish_reason == "stopped"
    assert _entries() == 0
    again = nb_model.stream("write a long essay about tides", max_tokens=300)
    next(iter(again))
    again.close()
    assert not again.generation.cached and slow.stats()["requests"] == 2


def test_an_interrupted_cell_is_not_cached(shell, slow, cache_on):
    cell = "%%generate --max-tokens 300 -o g\nwrite a long essay about rivers"
    res, cap, _ = run_interrupted(shell, cell, after=0.6)
    assert shell.user_ns["g"].finish_reason == "interrupted" and shell.user_ns["g"].text
    assert _entries() == 0


def test_the_panels_stop_is_not_cached(slow, cache_on):
    from nb_model.panel import Panel
    panel = Panel("write a long essay about gardens", max_tokens=300)
    panel.generate_button.click()
    deadline = time.monotonic() + 10
    while len(panel.text) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    panel.stop_button.click()
    assert panel.wait(2)
    assert panel.history[0].generations[0].finish_reason == "stopped"
    assert _entries() == 0


def test_compare_stop_and_interrupt_are_not_cached(shell, slow, cache_on):
    from nb_model.panel import Panel
    panel = Panel("write a long essay about ships", max_tokens=300, compare="max_tokens=290,300")
    panel.generate_button.click()
    deadline = time.monotonic() + 10
    while not all(panel.text) and time.monotonic() < deadline:
        time.sleep(0.02)
    panel.stop_button.click()
    assert panel.wait(2)
    assert [g.finish_reason for g in panel.history[0].generations] == ["stopped", "stopped"]
    res, cap, _ = run_interrupted(shell, '%%generate --compare "temperature=0.2,0.8" --max-tokens 300 -o g\n'
                                         'write a long essay about harbours', after=0.8)
    assert _entries() == 0


# -- pacing and server hints ---------------------------------------------------------------------------------

def test_requests_are_paced_in_process_so_the_server_never_says_429(use_endpoint, monkeypatch):
    from nb_model.client import Client
    from nb_model.config import resolve_profile
    with SandboxServer(port=0, qps=5) as limited:  # the server's own bucket: 5 per second
        use_endpoint(limited)
        client = Client(resolve_profile(None, qps=4))
        t = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            gens = list(pool.map(lambda i: client.generate(f"say {i}", max_tokens=2, max_retries=0), range(14)))
        elapsed = time.monotonic() - t
        stats = limited.wait_idle()
    assert len(gens) == 14 and stats["by_status"].get("429", stats["by_status"].get(429, 0)) == 0, stats
    assert elapsed >= (14 - 2) / 4 * 0.95, elapsed  # 4 per second after a burst of at most 2


def test_retry_after_an_hour_is_one_error_line_at_once(shell, use_endpoint):
    from nb_model.client import Client
    from nb_model.config import resolve_profile
    server = SeedServer(status=429, headers={"Retry-After": "3600"})
    try:
        use_endpoint(server)
        outcome = []

        def call():  # in a thread, so a client that obeys the hour fails this test at once, not by timeout
            try:
                Client(resolve_profile(None)).generate("Tell me about tides", max_tokens=5)
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(5)
        assert outcome, "the client is still waiting on Retry-After: 3600"
        assert "asks to wait 3600 s" in str(outcome[0]) and "\n" not in str(outcome[0])
        server.bodies.clear()
        t = time.monotonic()
        res, cap = run(shell, "%%generate\nTell me about tides")
        took = time.monotonic() - t
    finally:
        server.close()
    assert not res.success and took < 5, took
    message = str(res.error_in_exec)
    assert type(res.error_in_exec).__name__ == "APIError" and "\n" not in message
    assert "asks to wait 3600 s" in message and len(server.bodies) == 1, message


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
