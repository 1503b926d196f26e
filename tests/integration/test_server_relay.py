"""The Jupyter Server extension for real: a ServerApp on a loopback port (own thread and event loop)
with nb_model's relay, a keyed sandbox upstream, a real ipykernel, real SQLite quota files; a
recording upstream (http.server on loopback) to see what the relay sends; a `jupyter server`
subprocess to read its /proc environment."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import server_process
from nb_model.client import Client
from nb_model.config import Profile, resolve_profile
from nb_model.errors import APIError
from nb_model.config.env import PROFILES_ENV, TOKEN_ENV, URL_ENV
from nb_model.sandbox import SandboxServer
from nb_model.tokens import estimate_tokens

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-upstream-" + "u" * 28
KEY_ENV = "NBM_TEST_UPSTREAM_KEY"
RELAY_ENV = (URL_ENV, TOKEN_ENV, PROFILES_ENV)
OTHER_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim", "notebook")
CHAT = {"messages": [{"role": "user", "content": "Tell me about rivers"}], "max_tokens": 20}


class JupyterServer:
    """A real `ServerApp` with the nb_model extension, served from a background thread."""

    def __init__(self, root: Path, relay: dict | None = None, token: str = "jupyter-test-token"):
        from traitlets.config import Config
        self.root, self.token = root, token
        self.config = Config({
            "ServerApp": {"port": 0, "ip": "127.0.0.1", "open_browser": False, "allow_root": True,
                          "root_dir": str(root), "log_level": "DEBUG",
                          "jpserver_extensions": {"nb_model": True, **dict.fromkeys(OTHER_EXTENSIONS, False)}},
            "IdentityProvider": {"token": token},
            "NbModelRelay": relay or {},
        })
        self.log = io.StringIO()
        self._handler = logging.StreamHandler(self.log)
        # the server's log from the start (extension start-up warnings included), as one more handler
        self.config.ServerApp.logging_config = {
            "handlers": {"test_capture": {"()": lambda: self._handler}},
            "loggers": {"ServerApp": {"handlers": ["console", "test_capture"]}}}
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> "JupyterServer":
        self._thread = threading.Thread(target=self._serve, name="jupyter-server", daemon=True)
        self._thread.start()
        assert self._ready.wait(60), "the Jupyter server did not start"
        if self._error:
            raise self._error
        for _ in range(200):  # the port is bound by a callback once the loop runs
            try:
                requests.get(self.url + "api/status", headers=self.jupyter_auth, timeout=2).raise_for_status()
                break
            except requests.RequestException:
                time.sleep(0.05)
        self.kernel_env = {name: os.environ[name] for name in RELAY_ENV}
        return self

    def _serve(self) -> None:
        from jupyter_server.serverapp import ServerApp
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            app = ServerApp(config=self.config)
            app.init_signal = lambda: None  # signals belong to the main thread
            app.initialize(argv=[])
            self.app = app
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        app.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.port}/"

    @property
    def relay(self):
        return self.app.web_app.settings["nb_model_relay"]

    @property
    def jupyter_auth(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    @property
    def relay_auth(self) -> dict:
        return {"Authorization": f"Bearer {self.kernel_env[TOKEN_ENV]}"}

    def post(self, path: str, body: dict, headers: dict | None = None, **kw) -> requests.Response:
        return requests.post(self.url + "nb-model/" + path, json=body, headers=headers, timeout=30, **kw)

    def run(self, coro, timeout: float = 90):
        """Run a coroutine on the server's event loop (where its kernel manager lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.app.io_loop.asyncio_loop).result(timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.app.io_loop.add_callback(self.app.stop)
        self._thread.join(30)
        self.relay.stop()
        self.app.log.removeHandler(self._handler)
        for name, value in self.kernel_env.items():
            if os.environ.get(name) == value:
                del os.environ[name]


@pytest.fixture
def upstream():
    """The 'paid API': a sandbox that demands the upstream key."""
    with SandboxServer(port=0, qps=0, api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def serve(tmp_path, monkeypatch, upstream):
    """serve(**NbModelRelay settings) -> a started JupyterServer; the upstream key only in its env."""
    started = []

    def start(root=None, **relay):
        monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
        relay.setdefault("quota_db", str(tmp_path / "quotas.sqlite"))
        relay.setdefault("qps", 0)
        relay.setdefault("profiles", {
            "chat": {"endpoint": upstream.url + "/v1", "protocol": "openai", "model": "up-1", "key_env": KEY_ENV},
            "seed": {"endpoint": upstream.url, "protocol": "seed", "model": "up-seed", "key_env": KEY_ENV},
        })
        server = JupyterServer(root or tmp_path, relay).start()
        started.append(server)
        if any(prof.get("key_env") == KEY_ENV for prof in relay["profiles"].values()):
            assert KEY_ENV not in os.environ  # read by the extension, then hidden from kernels
        return server

    yield start
    for server in started:
        server.stop()


def use_relay(monkeypatch, server) -> None:
    """What a kernel of `server` inherits (the values its extension published)."""
    for name, value in server.kernel_env.items():
        monkeypatch.setenv(name, value)


class RecordingUpstream:
    """A small upstream on loopback (http.server in a thread): records each request (path, headers,
    JSON body) and streams `reply(key)` back, each item its own HTTP chunk, `key` being the Bearer
    token the relay sent."""

    DEFAULT = (b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}],'
               b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n', b"data: [DONE]\n\n")

    def __init__(self):
        self.seen: list[dict] = []
        self.reply = lambda key: list(self.DEFAULT)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)})
                key = (self.headers.get("Authorization") or "").partition(" ")[2]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in upstream.reply(key):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.02)
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder():
    server = RecordingUpstream()
    yield server
    server.stop()


def chunks_of(response) -> list[tuple[float, bytes]]:
    start, out = time.monotonic(), []
    for data in iter(lambda: response.raw.read1(65536), b""):
        out.append((time.monotonic() - start, data))
    return out


# -- the kernel side ------------------------------------------------------------

KERNEL_CODE = """
import json, os
from nb_model.config import resolve_profile
from nb_model.client import Client
profile = resolve_profile()
stream = Client(profile).stream("Tell me about rivers", max_tokens=25)
pieces = list(stream)
print(json.dumps({"profile": profile.name, "pieces": len(pieces), "text": "".join(pieces),
                  "finish": stream.generation.finish_reason, "env": dict(os.environ)}))
"""


async def _execute_in_new_kernel(app, code: str) -> str:
    km = app.kernel_manager
    kernel_id = await km.start_kernel(kernel_name="python3")
    client = km.get_kernel(kernel_id).client()
    client.start_channels()
    out: list[str] = []
    try:
        await client.wait_for_ready(timeout=60)
        reply = await client.execute_interactive(
            code, timeout=60,
            output_hook=lambda msg: out.append(msg["content"].get("text", "")) if msg["msg_type"] == "stream"
            else out.append(json.dumps(msg["content"])) if msg["msg_type"] == "error" else None)
        assert reply["content"]["status"] == "ok", "".join(out)
    finally:
        client.stop_channels()
        await km.shutdown_kernel(kernel_id, now=True)
    return "".join(out)


def test_kernel_streams_through_relay_without_the_key(serve, monkeypatch, upstream):
    server = serve()
    use_relay(monkeypatch, server)  # kernels inherit the server's environment
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = json.loads(server.run(_execute_in_new_kernel(server.app, KERNEL_CODE)))
    assert result["profile"] == "relay:chat"  # picked automatically (first relay profile)
    assert result["text"].startswith("[sandbox]") and result["pieces"] > 3 and result["finish"] == "length"
    assert KEY_ENV not in result["env"]
    assert UPSTREAM_KEY not in json.dumps(result["env"])
    assert result["env"][TOKEN_ENV] == server.kernel_env[TOKEN_ENV]
    assert upstream.wait_idle()["by_status"] == {"200": 1}  # the upstream accepted the key the relay added


# -- the client core through the relay ----------------------------------------------

@pytest.mark.parametrize("name, protocol", [("chat", "openai"), ("seed", "seed")])
def test_client_core_streams_through_relay_same_text_as_upstream(serve, monkeypatch, upstream, name, protocol):
    server = serve()
    use_relay(monkeypatch, server)
    profile = resolve_profile("relay:" + name)
    assert profile.protocol == protocol and profile.key_env == TOKEN_ENV
    assert profile.endpoint == server.url + "nb-model/relay/" + name
    relayed = Client(profile).stream("Tell me about rivers", max_tokens=30, temperature=0.7)
    pieces = list(relayed)
    monkeypatch.setenv("DIRECT_KEY", UPSTREAM_KEY)  # only now, to compare with a direct call
    direct_profile = Profile("direct", upstream.url, protocol, profile.model, key_env="DIRECT_KEY")
    direct = Client(direct_profile).generate("Tell me about rivers", stream=True, max_tokens=30, temperature=0.7)
    assert len(pieces) > 5 and "".join(pieces) == direct.text
    assert relayed.generation.usage == direct.usage
    assert relayed.generation.model == profile.model == {"chat": "up-1", "seed": "up-seed"}[name]  # echoed


def test_default_profile_is_a_relay_profile(serve, monkeypatch):
    use_relay(monkeypatch, serve())
    assert resolve_profile().name == "relay:chat"
    monkeypatch.setenv("NB_MODEL_ENDPOINT", "http://127.0.0.1:9")
    assert resolve_profile().name == "env"  # an explicit endpoint still wins


def test_streaming_passes_chunks_as_they_arrive(serve, monkeypatch, upstream):
    server = serve()
    use_relay(monkeypatch, server)
    upstream.token_rate = 20.0  # 30 tokens: the upstream needs about 1.5 s
    start = time.monotonic()
    stream = Client(resolve_profile("relay:chat")).stream("Describe a lighthouse", max_tokens=30)
    stamps = [time.monotonic() - start for _ in stream]
    assert stamps[-1] >= 1.3
    assert max(stamps[0], stream.generation.ttft_s) < stamps[-1] - 0.8  # the first piece long before the last
    assert len({round(s, 1) for s in stamps}) > 10  # spread over time, not one burst at the end
    r = server.post("relay/seed/v1/generate", {"prompt": "Describe a lighthouse", "max_tokens": 30},
                    {**server.relay_auth, "X-Stream": "true"}, stream=True)
    got = chunks_of(r)
    assert r.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert len(got) > 10 and got[0][0] < got[-1][0] - 0.8 and got[-1][0] >= 1.3


def test_broken_upstream_stream_reaches_the_client_as_broken(serve, monkeypatch, upstream):
    from nb_model.errors import StreamBroken
    server = serve()
    use_relay(monkeypatch, server)
    upstream.token_rate = 50.0
    upstream.inject("cut-after:6")
    with pytest.raises(StreamBroken) as info:
        Client(resolve_profile("relay:chat")).generate("Describe a bridge", stream=True, max_tokens=30)
    assert info.value.partial.text.startswith("[sandbox]")


# -- keys, errors, logs ---------------------------------------------------------

def test_key_in_no_response_header_error_or_log_line(serve, monkeypatch, upstream):
    monkeypatch.setenv("NBM_TEST_WRONG_KEY", "sk-wrong-" + "w" * 30)
    server = serve(profiles={
        "chat": {"endpoint": upstream.url, "protocol": "openai", "key_env": KEY_ENV},
        "wrongkey": {"endpoint": upstream.url, "protocol": "openai", "key_env": "NBM_TEST_WRONG_KEY"},
    })
    replies = []
    use_relay(monkeypatch, server)
    gen = Client(resolve_profile("relay:chat")).generate("Tell me about rivers", stream=True, max_tokens=10)
    assert gen.text
    replies.append(server.post("relay/chat/v1/chat/completions", {**CHAT, "stream": True}, server.relay_auth))
    upstream.inject("500")
    replies.append(server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth))
    upstream.inject("429")
    replies.append(server.post("relay/chat/v1/completions", {"prompt": "x"}, server.relay_auth))
    replies.append(server.post("relay/wrongkey/v1/chat/completions", CHAT, server.relay_auth))
    replies.append(server.post("relay/nope/v1/chat/completions", CHAT, server.relay_auth))
    statuses = [r.status_code for r in replies]
    assert statuses == [200, 500, 429, 401, 404]
    messages = [r.json()["error"]["message"] for r in replies[1:]]
    assert messages[0] == "simulated server error" and messages[1] == "simulated rate limit"
    assert messages[2] == "invalid or missing API key" and "no relay profile 'nope'" in messages[3]
    assert replies[2].headers["Retry-After"] == "1"  # upstream hints pass through
    assert replies[1].headers["X-Request-Id"].startswith("req_")
    with pytest.raises(APIError) as info:
        Client(resolve_profile("relay:wrongkey")).generate("hi", max_tokens=5)
    assert info.value.status == 401
    log = server.log.getvalue()
    for secret in (UPSTREAM_KEY, "sk-wrong-" + "w" * 30, server.kernel_env[TOKEN_ENV]):
        for r in replies:
            assert secret not in r.text and secret not in json.dumps(dict(r.headers))
        assert secret not in str(info.value)
        assert secret not in log
    for line in ("chat/v1/chat/completions -> openai 200", "chat/v1/chat/completions -> openai 500",
                 "wrongkey/v1/chat/completions -> openai 401"):
        assert line in log  # the relay's own lines are there, and clean


def test_log_redaction_masks_authorization_and_secrets(serve):
    server = serve()
    token = server.kernel_env[TOKEN_ENV]
    server.app.log.warning("incoming headers %s", {"Authorization": f"Bearer {token}", "Accept": "*/*"})
    server.app.log.info("Authorization: token abcdefgh12345678")
    logging.getLogger("tornado.access").warning("upstream said %s", UPSTREAM_KEY)
    log = server.log.getvalue()
    assert token not in log and UPSTREAM_KEY not in log and "abcdefgh12345678" not in log
    assert "'Authorization': '***'" in log and "Authorization: ***" in log and "upstream said ***" in log


def test_relay_token_required(serve, monkeypatch):
    server = serve()
    missing = server.post("relay/chat/v1/chat/completions", CHAT)
    wrong = server.post("relay/chat/v1/chat/completions", CHAT, {"Authorization": "Bearer not-the-token"})
    as_jupyter = server.post("relay/chat/v1/chat/completions", CHAT, server.jupyter_auth)
    as_kernel = server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth)
    assert (missing.status_code, wrong.status_code) == (401, 403)
    assert "NB_MODEL_RELAY_TOKEN" in missing.json()["error"]["message"]
    assert "wrong relay token" in wrong.json()["error"]["message"]
    assert (as_jupyter.status_code, as_kernel.status_code) == (200, 200)
    assert requests.get(server.url + "nb-model/status", timeout=10).status_code == 401
    use_relay(monkeypatch, server)
    monkeypatch.setenv(TOKEN_ENV, "stale-token-from-an-old-server")
    with pytest.raises(APIError) as info:
        Client(resolve_profile("relay:chat")).generate("hi", max_tokens=5)
    assert info.value.status == 403 and "restart the kernel" in str(info.value)


def test_refuses_to_send_key_over_plain_http_to_remote_host(serve, upstream):
    remote = {"endpoint": "http://192.0.2.10:8000/v1", "protocol": "openai", "key_env": KEY_ENV}
    server = serve(profiles={"remote": remote})
    start = time.monotonic()
    r = server.post("relay/remote/v1/chat/completions", CHAT, server.relay_auth)
    assert r.status_code == 403 and time.monotonic() - start < 1  # refused without connecting
    assert "allow_insecure_upstream" in r.json()["error"]["message"]
    assert "refuse" in server.log.getvalue()  # warned at start-up too
    allowed = serve(profiles={"remote": remote}, allow_insecure_upstream=True, connect_timeout=0.3)
    r = allowed.post("relay/remote/v1/chat/completions", CHAT, allowed.relay_auth)
    assert r.status_code in (502, 504) and "upstream" in r.json()["error"]["message"]


def test_status_lists_profiles_never_keys(serve):
    server = serve()
    r = requests.get(server.url + "nb-model/status", headers=server.jupyter_auth, timeout=10)
    body = r.json()
    assert body["profiles"] == {
        "chat": {"protocol": "openai", "model": "up-1", "key": "held by the server"},
        "seed": {"protocol": "seed", "model": "up-seed", "key": "held by the server"},
    }
    assert body["limits"] == {"qps": 0, "tokens_per_day": 0} and body["sandbox"] is True
    assert UPSTREAM_KEY not in r.text and "endpoint" not in r.text
    assert json.loads(server.kernel_env[PROFILES_ENV]) == {
        "chat": {"protocol": "openai", "model": "up-1"}, "seed": {"protocol": "seed", "model": "up-seed"}}


# -- per-user limits ------------------------------------------------------------

def test_qps_limit_gives_429_with_retry_after(serve, monkeypatch):
    server = serve(qps=2)
    replies = [server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth) for _ in range(6)]
    limited = [r for r in replies if r.status_code == 429]
    assert [r.status_code for r in replies][:2] == [200, 200] and len(limited) >= 3
    assert int(limited[0].headers["Retry-After"]) >= 1 and 0 < int(limited[0].headers["retry-after-ms"]) <= 1000
    assert "2 requests per second" in limited[0].json()["error"]["message"]
    time.sleep(int(limited[-1].headers["retry-after-ms"]) / 1000 + 0.05)
    assert server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth).status_code == 200
    use_relay(monkeypatch, server)
    assert resolve_profile("relay:chat").qps == 2  # the client core paces itself to the relay's limit
    gens = [Client(resolve_profile("relay:chat")).generate("hi", max_tokens=3) for _ in range(4)]
    assert all(g.text for g in gens)


def test_daily_token_limit_survives_restart_and_is_per_user(serve, monkeypatch, tmp_path):
    db = str(tmp_path / "shared-quotas.sqlite")
    server = serve(tokens_per_day=70, quota_db=db, token_user="ada")
    use_relay(monkeypatch, server)
    client = Client(resolve_profile("relay:chat"))
    used, refused = 0, None
    while refused is None:
        try:
            used += client.generate("Tell me about rivers", max_tokens=20, stream=True).usage.total_tokens
        except APIError as exc:
            refused = exc
    reserve = 20 + estimate_tokens("Tell me about rivers") + 4 + 3  # max_tokens, prompt, message framing
    assert used <= 70 < used + reserve  # refused while a whole answer could still pass the limit
    assert refused.status == 429 and "daily token limit" in str(refused) and "lower max_tokens" in str(refused)
    r = server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 86400
    status = requests.get(server.url + "nb-model/status", headers=server.relay_auth, timeout=10).json()
    assert status["user"] == "ada" and status["tokens_used_today"] == used
    server.stop()

    again = serve(tokens_per_day=70, quota_db=db, token_user="ada")
    r = again.post("relay/chat/v1/chat/completions", CHAT, again.relay_auth)
    assert r.status_code == 429 and f"used {used} of 70" in r.json()["error"]["message"]
    other = serve(tokens_per_day=70, quota_db=db, token_user="grace")
    assert other.post("relay/chat/v1/chat/completions", CHAT, other.relay_auth).status_code == 200


def test_daily_limit_reserves_max_tokens_up_front(serve, upstream):
    server = serve(tokens_per_day=100, token_user="bea")
    big = server.post("relay/chat/v1/chat/completions", {**CHAT, "max_tokens": 200}, server.relay_auth)
    message = big.json()["error"]["message"]
    assert big.status_code == 429 and "may take" in message and "lower max_tokens" in message
    assert upstream.stats()["requests"] == 0  # refused before anything was sent
    upstream.token_rate = 20.0  # 30 tokens take 1.5 s: the four requests overlap
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: server.post("relay/chat/v1/chat/completions", {**CHAT, "max_tokens": 30},
                                                      server.relay_auth).status_code, range(4)))
    assert codes == [200, 200, 429, 429]  # each reserved 30 + its prompt: two fit in 100
    status = requests.get(server.url + "nb-model/status", headers=server.relay_auth, timeout=10).json()
    assert 60 < status["tokens_used_today"] <= 100  # the real usage replaced the reservations


@pytest.mark.redis
def test_limits_kept_in_redis_when_configured(serve, redis_server, tmp_path):
    import redis
    user = "redis-user-" + uuid.uuid4().hex[:6]
    server = serve(qps=1, tokens_per_day=10_000, redis_url=redis_server, token_user=user)
    codes = [server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth).status_code for _ in range(2)]
    assert codes == [200, 429]
    conn = redis.Redis.from_url(redis_server)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert int(conn.get(f"nb_model:relay:tokens:{user}:{day}")) > 0
    assert conn.exists(f"nb_model:relay:rate:{user}")
    assert not (tmp_path / "quotas.sqlite").exists()  # Redis instead of the SQLite file


# -- the sandbox route ------------------------------------------------------------

def test_sandbox_route_works_with_nothing_configured(tmp_path, monkeypatch):
    server = JupyterServer(tmp_path, {"quota_db": str(tmp_path / "q.sqlite")}).start()
    try:
        assert json.loads(server.kernel_env[PROFILES_ENV]) == {}
        use_relay(monkeypatch, server)
        assert resolve_profile().name == "sandbox"  # no relay profile: the default stays in-kernel
        monkeypatch.setenv("JUPYTER_TOKEN_FOR_TEST", server.token)
        for protocol in ("seed", "openai"):
            profile = Profile("lab", server.url + "nb-model/sandbox", protocol, key_env="JUPYTER_TOKEN_FOR_TEST")
            stream = Client(profile).stream("Tell me about rivers", max_tokens=15)
            assert "".join(stream).startswith("[sandbox]") and stream.generation.finish_reason == "length"
        r = requests.get(server.url + "nb-model/sandbox/health", headers=server.relay_auth, timeout=10)
        assert r.json() == {"status": "ok", "model": "sandbox"}
        assert requests.get(server.url + "nb-model/sandbox/health", timeout=10).status_code == 401
        status = requests.get(server.url + "nb-model/status", headers=server.jupyter_auth, timeout=10).json()
        assert status["profiles"] == {} and status["sandbox"] is True
    finally:
        server.stop()


def test_sandbox_route_requotes_its_path(tmp_path):
    server = JupyterServer(tmp_path, {"quota_db": str(tmp_path / "q.sqlite")}).start()
    try:
        url, auth = server.url + "nb-model/sandbox/", server.jupyter_auth
        smuggled = requests.get(url + "x%20HTTP/1.1%0d%0aHost:%20evil", headers=auth, timeout=10)
        assert smuggled.status_code == 400 and "control characters" in smuggled.json()["error"]["message"]
        spaced = requests.get(url + "x%20y", headers=auth, timeout=10)
        assert spaced.status_code == 404 and spaced.json()["error"]["message"] == "no route for /x%20y"
        assert requests.get(url + "health", headers=auth, timeout=10).json()["status"] == "ok"
    finally:
        server.stop()


# -- what goes upstream -------------------------------------------------------------

def test_no_query_and_only_allowed_headers_go_upstream(serve, recorder):
    server = serve(profiles={"rec": {"endpoint": recorder.url + "/v1", "protocol": "openai", "key_env": KEY_ENV}})
    extra = {"OpenAI-Organization": "org-x", "OpenAI-Project": "proj-x", "X-Api-Key": "caller-key",
             "X-Sandbox-Fault": "500", "Cookie": "a=b", "X-Stream": "true", "Accept": "text/event-stream"}
    r = server.post(f"relay/rec/v1/chat/completions?token={server.token}&_xsrf=abc&api_key=k", CHAT, extra)
    assert r.status_code == 200 and b"[DONE]" in r.content  # authenticated by the query's Jupyter token
    (seen,) = recorder.seen
    assert seen["path"] == "/v1/chat/completions"  # no ?token=..., no query at all
    sent = {name.lower(): value for name, value in seen["headers"].items()}
    for name in ("openai-organization", "openai-project", "x-api-key", "x-sandbox-fault", "cookie"):
        assert name not in sent
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}" and sent["x-stream"] == "true"
    assert sent["accept"] == "text/event-stream" and sent["content-type"] == "application/json"


def test_body_gets_the_profile_model_a_capped_max_tokens_and_one_choice(serve, recorder):
    server = serve(profiles={"rec": {"endpoint": recorder.url, "protocol": "openai", "model": "small-1",
                                     "key_env": KEY_ENV, "max_tokens_cap": 50}})
    post = lambda body: server.post("relay/rec/v1/chat/completions", body, server.relay_auth)  # noqa: E731
    assert post({**CHAT, "model": "big-expensive-1", "max_tokens": 50}).status_code == 200
    assert post({"messages": CHAT["messages"]}).status_code == 200
    assert [(s["body"]["model"], s["body"]["max_tokens"]) for s in recorder.seen] == [("small-1", 50), ("small-1", 50)]
    refused = [post({**CHAT, "max_tokens": 51}), post({**CHAT, "max_completion_tokens": 500}),
               post({**CHAT, "n": 3}), post({**CHAT, "best_of": 2}),
               server.post("relay/rec/v1/chat/completions", None, server.relay_auth, data=b"{not json")]
    messages = [r.json()["error"]["message"] for r in refused]
    assert [r.status_code for r in refused] == [400] * 5 and len(recorder.seen) == 2  # none of them sent
    assert "max_tokens=51 is over the cap of relay profile 'rec': use at most 50" in messages[0]
    assert "max_completion_tokens=500" in messages[1] and "n=3" in messages[2] and "best_of=2" in messages[3]
    assert "not valid JSON" in messages[4] and all("\n" not in m for m in messages)


def test_key_split_across_chunks_is_masked(serve, recorder, monkeypatch):
    key = "sk-echo-" + secrets.token_hex(16)
    monkeypatch.setenv("NBM_TEST_ECHO_KEY", key)
    server = serve(profiles={"echo": {"endpoint": recorder.url, "protocol": "openai", "key_env": "NBM_TEST_ECHO_KEY"}})

    def reply(got):  # the key cut at several places, then a stream that ends inside it
        return [b"data: one " + got[:1].encode(), got[1:].encode() + b" two " + got[:10].encode(),
                got[10:-1].encode(), got[-1:].encode() + b" three\n\n",
                b"data: [DONE]\n\ndata: four " + got[:20].encode()]
    recorder.reply = reply
    r = server.post("relay/echo/v1/chat/completions", {**CHAT, "stream": True}, server.relay_auth)
    assert recorder.seen[0]["headers"]["Authorization"] == f"Bearer {key}"  # the upstream did get it
    assert r.status_code == 200
    assert r.text == "data: one *** two *** three\n\ndata: [DONE]\n\ndata: four ***"
    for part in (key, key[:10], key[10:], key[-12:]):
        assert part not in r.text


# -- where the key comes from ---------------------------------------------------------

def test_key_from_a_key_file(serve, upstream, tmp_path, monkeypatch):
    key_file = tmp_path / "upstream.key"
    key_file.write_text(UPSTREAM_KEY + "\n")
    key_file.chmod(0o600)
    profile = {"endpoint": upstream.url + "/v1", "protocol": "openai", "model": "up-1", "key_file": str(key_file)}
    server = serve(profiles={"filed": profile})
    use_relay(monkeypatch, server)
    g = Client(resolve_profile("relay:filed")).generate("Tell me about rivers", max_tokens=10)
    assert g.text.startswith("[sandbox]") and upstream.wait_idle()["by_status"] == {"200": 1}
    status = requests.get(server.url + "nb-model/status", headers=server.jupyter_auth, timeout=10).text
    assert "held by the server" in status and str(key_file) not in status and UPSTREAM_KEY not in status
    assert "open to other users" not in server.log.getvalue()
    key_file.chmod(0o644)
    loose = serve(profiles={"filed": profile})
    assert f"key_file {key_file} is open to other users (mode 644): chmod 600 {key_file}" in loose.log.getvalue()
    missing = serve(profiles={"filed": {**profile, "key_file": str(tmp_path / "nope.key")}})
    assert "cannot read key_file" in missing.log.getvalue()
    assert missing.post("relay/filed/v1/chat/completions", CHAT, missing.relay_auth).status_code == 401


def test_literal_key_in_the_servers_own_config(serve, upstream, monkeypatch):
    server = serve(profiles={"lit": {"endpoint": upstream.url, "protocol": "seed", "key": UPSTREAM_KEY}})
    use_relay(monkeypatch, server)
    g = Client(resolve_profile("relay:lit")).generate("Tell me about rivers", max_tokens=10)
    assert g.text.startswith("[sandbox]") and upstream.wait_idle()["by_status"] == {"200": 1}
    status = requests.get(server.url + "nb-model/status", headers=server.jupyter_auth, timeout=10).text
    assert UPSTREAM_KEY not in status and "held by the server" in status
    assert UPSTREAM_KEY not in json.dumps(server.kernel_env) and UPSTREAM_KEY not in server.log.getvalue()


def test_server_process_environment_no_longer_shows_the_key(tmp_path, upstream):
    port, token = _free_port(), secrets.token_hex(16)
    config = tmp_path / "jupyter_server_config.json"
    config.write_text(json.dumps({
        "ServerApp": {"ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False,
                      "allow_root": True, "root_dir": str(tmp_path),
                      "jpserver_extensions": {"nb_model": True, **dict.fromkeys(OTHER_EXTENSIONS, False)}},
        "IdentityProvider": {"token": token},
        "NbModelRelay": {"quota_db": str(tmp_path / "q.sqlite"), "qps": 0, "profiles": {
            "chat": {"endpoint": upstream.url + "/v1", "protocol": "openai", "key_env": KEY_ENV}}}}))
    env = {**os.environ, KEY_ENV: UPSTREAM_KEY, "PYTHONPATH": str(ROOT), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run")}
    url, log = f"http://127.0.0.1:{port}/", tmp_path / "server.log"
    argv = [sys.executable, "-m", "jupyter_server", f"--config={config}"]
    with server_process(argv, url + "api", log, env=env, cwd=tmp_path) as proc:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert UPSTREAM_KEY.encode() not in environ
        assert f"{KEY_ENV}={'*' * len(UPSTREAM_KEY)}".encode() in environ.split(b"\0")  # overwritten in place
        r = requests.post(url + "nb-model/relay/chat/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"token {token}"}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("[sandbox]")
    assert "could not clear" not in log.read_text() and UPSTREAM_KEY not in log.read_text()


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
