"""Request pacing: the in-process limiter and the Redis limiter shared by processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nb_model
import pytest
from nb_model.batch import generate_many
from nb_model.client import client_for
from nb_model.sandbox import SandboxServer

from conftest import _free_port, missing_part
from helpers.collected import collected  # noqa: F401 (fixtures)


ROOT = Path(__file__).resolve().parents[2]


# -- the rate limiter shared through Redis -------------------------------------------------
WORKER = """
import json, sys, time
from nb_model.batch import generate_many
start_at, n, tag = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start_at - time.time()))
t = time.time()
got = generate_many([f"{tag} prompt {i}" for i in range(n)], max_workers=4, progress=False, cache="off",
                    max_retries=0, max_tokens=5)
print(json.dumps({"errors": [g.error for g in got if g.finish_reason == "error"], "start": t, "end": time.time()}))
"""


def run_processes(server, tmp_path, limit_url, procs=3, each=15):
    env = {**os.environ, "NB_MODEL_ENDPOINT": server.url, "NB_MODEL_LIMIT_URL": limit_url,
           "PYTHONPATH": str(ROOT), "NB_MODEL_LOCAL": "off"}
    start_at = time.time() + 1.5  # every process is imported and waiting by then
    children = [subprocess.Popen([sys.executable, "-c", WORKER, str(start_at), str(each), f"p{n}"], env=env,
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in range(procs)]
    out = []
    for child in children:
        stdout, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.redis
def test_redis_limiter_keeps_several_processes_under_the_server_limit(redis_server, tmp_path):
    with SandboxServer(port=0, qps=20) as server:  # the seed API's limit; the client profile says 20 too
        url = f"{redis_server}?namespace=t{uuid.uuid4().hex[:8]}"
        shared = run_processes(server, tmp_path, url)
        stats = server.wait_idle()
        assert stats["by_status"].get("429", 0) == 0 and all(not r["errors"] for r in shared), stats
        assert stats["requests"] == 45
        span = max(r["end"] for r in shared) - min(r["start"] for r in shared)
        assert 2.0 <= span < 5.0  # 45 requests at 20/s together (each process alone would take 0.75 s)
        assert min(r["end"] for r in shared) > max(r["start"] for r in shared)  # they really overlapped
        server.reset()
        alone = run_processes(server, tmp_path, "local")  # the control: each process limits only itself
        assert server.wait_idle()["by_status"].get("429", 0) > 0
        assert any("HTTP 429" in e for r in alone for e in r["errors"])


@pytest.mark.redis
def test_profile_cache_url_shares_the_limit_by_endpoint_and_key(redis_server, sandbox, monkeypatch, collected):
    """A profile's cache_url also shares its rate limit; profiles of any name calling the same endpoint with
    the same key share one schedule in Redis, keyed without the key itself."""
    from nb_model.limits import RedisBucket
    url = f"{redis_server}?namespace=t{uuid.uuid4().hex[:8]}"
    key, other = "sk-limit-" + "x" * 20, "sk-other-" + "y" * 20
    monkeypatch.setenv("MODEL_API_KEY", key)
    monkeypatch.setenv("OTHER_KEY", other)
    for name, extra in (("shared", {}), ("same-key", {}), ("other-key", {"key_env": "OTHER_KEY"})):
        nb_model.add_profile(name, endpoint=sandbox.url, cache_url=url, qps=5.0, **extra)
    a, b, c = (client_for(name).limiter for name in ("shared", "same-key", "other-key"))
    assert all(isinstance(limiter, RedisBucket) for limiter in (a, b, c))
    assert a.key == b.key != c.key and sandbox.url in a.key
    assert not any(secret in k for k in (a.key, c.key) for secret in (key, other, "x" * 20, "y" * 20))
    t = time.perf_counter()
    for limiter in (a, b) * 3:  # one schedule at 5/s with a burst of 2: four waits of 0.2 s
        limiter.acquire()
    assert time.perf_counter() - t >= 0.7
    t = time.perf_counter()
    c.acquire()
    c.acquire()
    assert time.perf_counter() - t < 0.15  # another key: its own schedule
    assert client_for("shared").generate("hello", max_tokens=3, cache="off").text
    assert not [n for n in collected if "rate limit" in n]  # Redis answered: no fallback


def test_unreachable_redis_is_one_warning_and_the_local_limit(sandbox, use_endpoint, monkeypatch, collected):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("NB_MODEL_LIMIT_URL", f"redis://:secret-pw@127.0.0.1:{port}/0")
    use_endpoint(sandbox)
    got = generate_many([f"q {i}" for i in range(6)], max_tokens=5, progress=False)
    assert all(g.finish_reason in ("length", "stop") for g in got)
    warned = [n for n in collected if "shared rate limit" in n]
    assert len(warned) == 1 and "unavailable" in warned[0] and "requests/s" in warned[0]
    assert "secret-pw" not in warned[0] and "\n" not in warned[0]


# -- Redis killed and restarted mid-batch ----------------------------------------------------------------
REDIS_KILL_WORKER = """
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
            children = [subprocess.Popen([sys.executable, "-c", REDIS_KILL_WORKER, str(start_at), "50", f"p{n}", server.url],
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
