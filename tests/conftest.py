"""Shared fixtures: a real sandbox HTTP server on loopback, a real IPython shell, a clean env."""
from __future__ import annotations

import contextlib
import os

import pytest

ENV_VARS = ("MODEL_API_KEY", "NB_MODEL_API_KEY", "NB_MODEL_ENDPOINT", "NB_MODEL_PROTOCOL", "NB_MODEL_MODEL",
            "NB_MODEL_PROFILE", "NB_MODEL_CONFIG", "NB_MODEL_CACHE", "NB_MODEL_CACHE_URL",
            "NB_MODEL_CACHE_NAMESPACE", "NB_MODEL_CACHE_TTL", "NB_MODEL_LIMIT_URL", "NB_MODEL_RELAY_URL",
            "NB_MODEL_RELAY_TOKEN", "NB_MODEL_RELAY_PROFILES", "NB_MODEL_LOCAL", "JPY_SESSION_NAME",
            "NB_MODEL_HUB_URL", "NB_MODEL_HUB_SERVICE", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL")


@pytest.fixture
def _env_snapshot():
    """Put os.environ back as it was, after every other teardown (monkeypatch's included): a Jupyter
    server started in this process exports relay variables for its kernels."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own SIGINT handler during each test: a shell's background job starts pytest with SIGINT
    ignored, and `_thread.interrupt_main` (the Ctrl-C of the interrupt tests) then does nothing."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(autouse=True)
def clean_env(_env_snapshot, monkeypatch, tmp_path):
    """No setting leaks in from the developer's machine, nor out of a test; each test runs in its own folder."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NB_MODEL_LOCAL", "off")
    monkeypatch.setenv("NB_MODEL_CACHE", "off")  # tests of the cache turn it on (delenv or a path)
    monkeypatch.chdir(tmp_path)
    from nb_model import cache, client, config, notices
    client._clients.clear()
    notices.forget_said()
    config.set_session_profile(None)
    config._session_profiles.clear()
    cache.reset()
    yield
    cache.reset()


@pytest.fixture
def sandbox():
    """A real sandbox server on a random loopback port, no auth, no QPS limit."""
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0) as server:
        yield server


@pytest.fixture
def keyed_sandbox():
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0, api_key="sk-test-" + "k" * 24) as server:
        yield server


@pytest.fixture
def use_endpoint(monkeypatch):
    """Point the default profile at a server: use_endpoint(server, protocol='seed')."""
    def point(server, protocol="seed", model=None):
        monkeypatch.setenv("NB_MODEL_ENDPOINT", server.url)
        monkeypatch.setenv("NB_MODEL_PROTOCOL", protocol)
        if model:
            monkeypatch.setenv("NB_MODEL_MODEL", model)
        from nb_model import client
        client._clients.clear()
    return point


@pytest.fixture
def shell():
    """A real IPython InteractiveShell with the extension loaded."""
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nb_model")
    ip.user_ns.pop("g", None)
    yield ip
    ip.user_ns.pop("g", None)


def run(ip, source: str):
    """Run a cell and return (result, captured) with stdout/stderr/displays captured."""
    from IPython.utils.capture import capture_output
    with capture_output() as cap:
        result = ip.run_cell(source)
    return result, cap


@contextlib.contextmanager
def server_process(argv: list[str], ready_url: str, log_path, timeout: float = 90.0, **popen):
    """Run a server command (output to `log_path`) until GET `ready_url` answers 2xx; stop it on exit.
    `popen`: more Popen arguments (env, cwd)."""
    import subprocess
    import time

    import requests
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{argv[:3]} exited with {proc.returncode}: {open(log_path).read()[-500:]}")
            try:
                if requests.get(ready_url, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[:3]} did not answer {ready_url} in {timeout:g} s: {open(log_path).read()[-500:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shown(cap) -> list[str]:
    """The text/plain of every display a cell published (footers, notices)."""
    return [o.data.get("text/plain", "") for o in cap.outputs]


def requests_seen(server, expect: int, timeout: float = 2.0) -> int:
    """The sandbox's request count, waiting (up to `timeout`) for it to reach `expect`: the server
    counts a request just after its reply, so the client can finish a moment before the count moves."""
    import time
    deadline = time.monotonic() + timeout
    while (seen := server.stats()["requests"]) < expect and time.monotonic() < deadline:
        time.sleep(0.005)
    return seen


def notices(cap) -> list[str]:
    """The one-line 'nb_model: …' notices among a cell's displays."""
    return [t for t in shown(cap) if t.startswith("nb_model:")]


def run_interrupted(shell, cell: str, after: float = 0.8):
    """`run` a cell with a Ctrl-C (SIGINT to the main thread) `after` seconds in: (result, capture, seconds)."""
    import _thread
    import threading
    import time
    threading.Timer(after, _thread.interrupt_main).start()
    t = time.perf_counter()
    res, cap = run(shell, cell)
    return res, cap, time.perf_counter() - t


def missing_part(reason: str) -> None:
    """Skip a test whose real part is absent here, but fail where everything must run: in CI (env CI)
    and under scripts/test.sh (env NB_MODEL_STRICT), which installs every part first."""
    if os.environ.get("CI") or os.environ.get("NB_MODEL_STRICT"):
        pytest.fail(reason)
    pytest.skip(reason)


def require(module: str, extra: str = "test"):
    """Import `module`, or skip through `missing_part` (a failure where everything must run)."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        missing_part(f"{module} is not installed (pip install 'nb_model[{extra}]')")


def settled(server, expected: int, timeout: float = 4.0) -> dict:
    """The sandbox's counters once `expected` requests were recorded (a handler records when it ends)."""
    import time
    deadline = time.monotonic() + timeout
    while server.stats()["requests"] < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # a request beyond `expected` would show up now
    return server.wait_idle(timeout)


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, no persistence; yields its URL (shared: use a
    namespace per test). Skipped only when the binary is absent locally; in CI (env CI set) that fails."""
    import shutil
    import subprocess
    import time
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server; scripts/setup.sh does it in CI)"
        missing_part(reason)
    import redis
    folder = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # the free port may be taken between choosing and binding it
        port = _free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(folder)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn = redis.Redis(port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                conn.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            continue
        conn.close()
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
    pytest.fail("redis-server did not answer PING within 10 s")


@pytest.fixture
def scripted_server():
    """A tiny real HTTP server on loopback for reply shapes the sandbox never sends: each POST gets the
    next of `.replies` (status, headers, body bytes; the last one repeats), `.requests` counts them."""
    import http.server
    import threading

    class Scripted:
        replies: list = []
        requests = 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            Scripted.requests += 1
            status, headers, body = Scripted.replies.pop(0) if len(Scripted.replies) > 1 else Scripted.replies[0]
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    Scripted.replies = []
    try:
        yield Scripted
    finally:
        httpd.shutdown()
        httpd.server_close()
