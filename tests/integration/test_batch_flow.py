"""generate_many under real latencies, outages and a lost Redis: the in-flight window follows the
rate and the latency, one backoff is shared by all workers, an outage is waited out within a
budget, and the per-process fallback limiter keeps processes that shared Redis under the limit.

Against the real sandbox, a minimal seed server written here from the API docs' examples, and a
real redis-server killed and restarted mid-batch."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import _free_port, missing_part
from nb_model.batch import generate_many, last_run
from nb_model.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]
OK = ("stop", "length")


def answered(got) -> int:
    return sum(g is not None and g.finish_reason in OK for g in got)


# -- a minimal seed server from the docs: POST /v1/generate -> {"output": ...}; 503 + Retry-After when down --
class DocsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, down_for: float = 0.0, retry_after: str | None = None, answer=None):
        super().__init__(("127.0.0.1", 0), _DocsHandler)
        self.down_until = time.monotonic() + down_for
        self.retry_after, self.answer = retry_after, answer or (lambda prompt: f"answer to {prompt}")
        self.arrivals: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DocsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.monotonic()
        status = 503 if now < self.server.down_until else 200
        with self.server.lock:
            self.server.arrivals.append((now, status))
        if status == 503:
            data = json.dumps({"error": {"message": "service unavailable"}}).encode()
            self.send_response(503)
            if self.server.retry_after:
                self.send_header("Retry-After", self.server.retry_after)
        else:
            data = json.dumps({"output": self.server.answer(body["prompt"])}, ensure_ascii=False).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def docs_server(monkeypatch):
    servers = []

    def make(**kw):
        server = DocsServer(**kw)
        servers.append(server)
        monkeypatch.setenv("NB_MODEL_ENDPOINT", server.url)
        monkeypatch.setenv("NB_MODEL_PROTOCOL", "seed")
        from nb_model import client
        client._clients.clear()
        return server
    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


# -- the in-flight window --------------------------------------------------------------------------
def test_in_flight_rises_with_latency_and_stays_within_the_rate(use_endpoint):
    peaks, rates = {}, {}
    for latency in (0.05, 1.0):
        with SandboxServer(port=0, qps=20, token_rate=10 / latency) as server:  # 10 tokens per answer
            use_endpoint(server)
            t = time.perf_counter()
            got = generate_many([f"lat {latency} prompt {i}" for i in range(60)], cache="off", progress=False,
                                max_tokens=10)
            elapsed = time.perf_counter() - t
            stats = server.wait_idle()
            assert answered(got) == 60 and stats["by_status"] == {"200": 60}  # no 429 reaches the server
            peaks[latency], rates[latency] = last_run["peak_in_flight"], 60 / elapsed
            assert elapsed >= (60 - 2) / 20  # paced at the rate: never faster than 20/s (burst of 2)
    assert peaks[0.05] <= 8 and peaks[1.0] >= 15, peaks  # ≈ 20/s × latency
    assert rates[1.0] >= 0.75 * 20, rates  # 4 workers would give 4/s at 1 s per answer


def test_explicit_max_workers_caps_the_window(use_endpoint):
    with SandboxServer(port=0, qps=20, token_rate=10) as server:  # 1 s per answer
        use_endpoint(server)
        got = generate_many([f"capped {i}" for i in range(12)], max_workers=3, cache="off", progress=False,
                            max_tokens=10)
        assert answered(got) == 12 and last_run["peak_in_flight"] <= 3


# -- one backoff for all workers, and the outage budget ------------------------------------------------
def test_ten_second_outage_loses_nothing(use_endpoint):
    with SandboxServer(port=0, qps=20, token_rate=100) as server:
        use_endpoint(server)
        threading.Timer(0.8, lambda: server.inject("503", seconds=10)).start()
        t = time.perf_counter()
        got = generate_many([f"outage prompt {i}" for i in range(100)], cache="off", progress=False,
                            max_tokens=10)
        elapsed = time.perf_counter() - t
        stats = server.wait_idle()
        assert answered(got) == 100 and not [g for g in got if g.error]
        assert stats["by_status"]["200"] == 100 and stats["by_status"].get("503", 0) > 0
        assert 10 < elapsed < 20  # waited the outage out, then went on at the rate
        assert stats["by_status"]["503"] < 150  # paused together: a few probes per pause, not a storm


def test_workers_pause_together_on_the_servers_hint(docs_server):
    server = docs_server(down_for=0.3, retry_after="2")
    got = generate_many([f"hinted {i}" for i in range(30)], cache="off", progress=False, max_tokens=5)
    assert answered(got) == 30
    first_503 = min(t for t, s in server.arrivals if s == 503)
    quiet = [t for t, s in server.arrivals if first_503 + 0.4 < t < first_503 + 1.9]
    assert quiet == []  # every worker honoured the one Retry-After: 2, not only the one that got it
    assert all(g.text.startswith("answer to hinted") for g in got)


def test_items_give_up_after_the_outage_budget(use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        server.inject("503", seconds=30)
        t = time.perf_counter()
        got = generate_many([f"doomed {i}" for i in range(6)], cache="off", progress=False, max_tokens=5,
                            outage_budget=1.5)
        assert time.perf_counter() - t < 8
        assert all(g.finish_reason == "error" and "HTTP 503" in g.error and "attempt" in g.error for g in got)
        assert all("\n" not in g.error for g in got)
        server.clear_faults()


def test_bad_outage_budget_is_one_line(use_endpoint, sandbox):
    from nb_model.errors import ConfigError
    use_endpoint(sandbox)
    with pytest.raises(ConfigError, match="outage_budget must be"):
        generate_many(["x"], outage_budget=-1)
    with pytest.raises(ConfigError, match="max_workers must be"):
        generate_many(["x"], max_workers=0)


# -- Redis killed and restarted mid-batch ----------------------------------------------------------------
WORKER = """
import json, sys, time
import nb_model
from nb_model.batch import generate_many
start_at, n, tag, endpoint = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
nb_model.add_profile("limited", endpoint=endpoint, qps=10)
time.sleep(max(0.0, start_at - time.time()))
got = generate_many([f"{tag} prompt {i}" for i in range(n)], profile="limited", progress=False, cache="off",
                    max_tokens=5)
print(json.dumps({"ok": sum(g.finish_reason in ("stop", "length") for g in got),
                  "errors": [g.error for g in got if g.error]}))
"""


def _start_redis(port: int, folder: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        missing_part("redis-server is not installed (apt-get install redis-server)")
    import redis
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn.ping()
            return proc, conn
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start")


@pytest.mark.redis
def test_redis_killed_mid_batch_loses_nothing_and_stays_under_the_limit(tmp_path):
    port = _free_port()
    proc, conn = _start_redis(port, tmp_path)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    try:
        with SandboxServer(port=0, qps=10) as server:
            env = {**os.environ, "NB_MODEL_LIMIT_URL": f"redis://127.0.0.1:{port}/0?namespace={namespace}",
                   "PYTHONPATH": str(ROOT), "NB_MODEL_LOCAL": "off"}
            start_at = time.time() + 1.5
            children = [subprocess.Popen([sys.executable, "-c", WORKER, str(start_at), "50", f"p{n}", server.url],
                                         env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True) for n in range(2)]
            time.sleep(start_at - time.time() + 2.0)  # both processes booked on the shared schedule
            assert conn.zcard(next(iter(conn.scan_iter("*:sharers")))) == 2
            proc.kill()  # Redis lost mid-batch
            proc.wait()
            time.sleep(3.0)
            proc, conn = _start_redis(port, tmp_path)  # and back
            outs = []
            for child in children:
                stdout, stderr = child.communicate(timeout=60)
                assert child.returncode == 0, stderr
                outs.append(json.loads(stdout.strip().splitlines()[-1]))
                assert "limiting this process alone to 5 requests/s (2 processes were sharing 10/s)" in stderr
            stats = server.wait_idle()
            assert sum(o["ok"] for o in outs) == 100 and not any(o["errors"] for o in outs)
            assert stats["by_status"].get("429", 0) <= 8, stats  # each process at its share (10/s each: 13 or more)
            assert list(conn.scan_iter("*:sharers"))  # the shared schedule took over again once Redis was back
    finally:
        proc.kill()
        proc.wait()
