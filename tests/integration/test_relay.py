"""The Jupyter Server relay: streaming through it, keys kept out, body limits, redaction."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from helpers.loopback import Loopback
from helpers.relay import JupyterServer, serve, upstream, use_relay  # noqa: F401 (fixtures)

from conftest import server_process
from nb_model.client import Client
from nb_model.config import Profile, resolve_profile
from nb_model.config.env import PROFILES_ENV, TOKEN_ENV
from nb_model.errors import APIError

ROOT = Path(__file__).resolve().parents[2]


UPSTREAM_KEY = "sk-upstream-" + "u" * 28


KEY_ENV = "NBM_TEST_UPSTREAM_KEY"


OTHER_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim", "notebook")


CHAT = {"messages": [{"role": "user", "content": "Tell me about rivers"}], "max_tokens": 20}


class RecordingUpstream(Loopback):
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

        self.serve(Handler)



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


MB = 1 << 20


def _raw_request(server, path: str, head: dict, body_chunks=(), chunked: bool = False):
    """Send a request on a raw socket (headers first, then the body chunks, stopping when the server
    answers or closes); returns (status, reply text, seconds to the status line)."""
    sock = socket.create_connection(("127.0.0.1", server.app.port), timeout=10)
    lines = [f"POST /nb-model/{path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             *(f"{k}: {v}" for k, v in head.items())]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    start = time.monotonic()
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    stop = threading.Event()

    def send_body():
        try:
            for chunk in body_chunks:
                if stop.is_set():
                    return
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        except OSError:
            pass  # the server answered and closed: what a limit does

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        took = time.monotonic() - start
        sock.settimeout(2)
        try:
            while data := sock.recv(65536):
                reply += data
        except OSError:
            pass
    finally:
        stop.set()
        sock.close()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    return status, reply.decode("utf-8", "replace"), took


def _status_latencies(server, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        t = time.monotonic()
        requests.get(server.url + "api/status", headers=server.jupyter_auth, timeout=10).raise_for_status()
        out.append(time.monotonic() - t)
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["content-length", "streamed"])
def test_a_50_mb_body_gets_413_at_once_while_jupyter_keeps_answering(serve, how):
    server = serve()
    head = {"Authorization": f"Bearer {server.kernel_env[TOKEN_ENV]}"}
    piece = b"x" * (256 << 10)
    chunks = (piece for _ in range(200))  # 50 MB
    if how == "content-length":
        head["Content-Length"] = str(50 * MB)
    latencies, stop = [], threading.Event()
    watcher = threading.Thread(target=_status_latencies, args=(server, stop, latencies), daemon=True)
    watcher.start()
    time.sleep(0.2)
    try:
        status, text, took = _raw_request(server, "relay/chat/v1/chat/completions", head, chunks,
                                          chunked=how == "streamed")
        time.sleep(0.3)
    finally:
        stop.set()
        watcher.join(10)
    assert status == 413, text[:300]
    assert "over this server's limit of 1,048,576 bytes (NbModelRelay.max_request_bytes)" in text
    assert took < 2.0, took  # target 0.5 s; the machine is shared, so the bound is generous
    assert latencies and max(latencies) < 1.0, latencies  # target 0.1 s
    print(f"413 after {took * 1000:.0f} ms; /api/status max {max(latencies) * 1000:.0f} ms "
          f"over {len(latencies)} calls")


def test_body_limit_is_configurable_and_a_body_under_it_passes(serve, upstream):
    server = serve(max_request_bytes=4096)
    body = {"messages": [{"role": "user", "content": "Tell me about rivers"}], "max_tokens": 5}
    assert server.post("relay/chat/v1/chat/completions", body, server.relay_auth).status_code == 200
    big = {**body, "messages": [{"role": "user", "content": "w " * 3000}]}
    r = server.post("relay/chat/v1/chat/completions", big, server.relay_auth)
    assert r.status_code == 413 and "limit of 4,096 bytes" in r.json()["error"]["message"]
    assert upstream.stats()["requests"] == 1  # the big one never went upstream
    r = requests.post(server.url + "nb-model/sandbox/v1/generate", data=json.dumps(big), headers=server.relay_auth,
                      timeout=10)
    assert r.status_code == 413  # the sandbox route has the same limit


# -- keys in upstream error bodies ----------------------------------------------------------------------
class EchoingUpstream(Loopback):
    """A careless upstream that repeats the caller's key in its error bodies (401, 500) and in an error
    event in the middle of a stream."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = (self.headers.get("Authorization") or "").partition(" ")[2]
                status = {"401": 401, "500": 500}.get(self.server.mode, 200)
                if status != 200:
                    out = json.dumps({"error": {"message": f"key {key} rejected", "type": "x"}}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                out = (json.dumps({"text": "Hello "}) + "\n" + json.dumps({"error": {
                    "message": f"upstream failure for key {key}"}}) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.serve(Handler)
        self.httpd.mode = "401"



@pytest.fixture
def echoing():
    server = EchoingUpstream()
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["401", "500", "stream"])
def test_a_key_echoed_by_the_upstream_is_masked_in_errors_reprs_history_and_logs(shell, echoing, monkeypatch,
                                                                                 mode):
    """Direct to the upstream: the client's errors, reprs and history never show the key."""
    from nb_model import cache
    key = "sk-echo-" + "e" * 24
    echoing.httpd.mode = mode
    monkeypatch.setenv("MODEL_API_KEY", key)
    monkeypatch.setenv("NB_MODEL_ENDPOINT", echoing.url)
    monkeypatch.setenv("NB_MODEL_PROTOCOL", "seed")
    client = Client(resolve_profile(None), cache=cache.default_store(None))
    with pytest.raises(APIError) as info:
        client.generate("Tell me about rivers", max_tokens=5, stream=True, max_retries=0)
    shown = [str(info.value), repr(info.value)]
    assert "***" in shown[0], shown
    res = shell.run_cell("%%generate --max-tokens 5 -o g\nTell me about rivers")
    shown += [str(res.error_in_exec), repr(shell.user_ns.get("g")), json.dumps(cache.history(), default=str)]
    for text in shown:
        assert key not in text and "eeeeeeeeeeee" not in text, text


@pytest.mark.parametrize("mode", ["401", "500", "stream"])
def test_the_relay_masks_a_key_echoed_in_upstream_error_bodies(serve, echoing, monkeypatch, mode):
    echoing.httpd.mode = mode
    server = serve(profiles={"seed": {"endpoint": echoing.url, "protocol": "seed", "key_env": KEY_ENV}})
    r = server.post("relay/seed/v1/generate", {"prompt": "hi", "max_tokens": 5},
                    {**server.relay_auth, "X-Stream": "true"})
    assert r.status_code == {"401": 401, "500": 500, "stream": 200}[mode]
    assert "***" in r.text and UPSTREAM_KEY not in r.text
    use_relay(monkeypatch, server)
    with pytest.raises(APIError) as info:
        Client(resolve_profile("relay:seed")).generate("hi", max_tokens=5, stream=True, max_retries=0)
    assert UPSTREAM_KEY not in str(info.value) and UPSTREAM_KEY not in server.log.getvalue()


def test_log_redaction_keeps_the_help_text_that_names_the_variable(serve):
    server = serve()
    server.app.log.warning("send 'Authorization: Bearer $NB_MODEL_RELAY_TOKEN' (set in kernels)")
    server.app.log.warning("Authorization: Bearer %s", server.kernel_env[TOKEN_ENV])
    log = server.log.getvalue()
    assert "'Authorization: Bearer $NB_MODEL_RELAY_TOKEN'" in log
    assert server.kernel_env[TOKEN_ENV] not in log and "Authorization: ***" in log
