"""The hub relay service run as a process: groups, limits, usage page, restarts."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from nb_model.errors import ConfigError
from nb_model.server.hub import Limits, ServiceConfig
from nb_model.tokens import estimate_tokens

from conftest import _free_port


KEY = "sk-plain-relay-" + "q" * 20


TOKENS = {"ada": "tok-ada-" + "a" * 24, "bob": "tok-bob-" + "b" * 24, "tess": "tok-tess-" + "t" * 24}


END_LINE = b'{"text": "", "finish_reason": "stop"}\n'  # as the sandbox ends its streams


@pytest.fixture(scope="module")
def upstream():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            ok = self.headers.get("Authorization") == f"Bearer {KEY}"
            seen.append({"ok": ok, "body": body})
            words = " ".join(f"snow{i}" for i in range(min(body.get("max_tokens", 8), 8)))
            if not ok:
                out, status, ctype = b'{"error": {"message": "bad key"}}', 401, "application/json"
            elif self.headers.get("X-Stream") == "true":
                out, status, ctype = json.dumps({"text": words}).encode() + b"\n" + END_LINE, 200, "application/x-ndjson"
            else:
                out, status, ctype = json.dumps({"output": words}).encode(), 200, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.seen = seen
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _config(upstream_url: str, db: Path, redis_url: str = "") -> str:
    users = "".join(f'[users.{name}]\ntoken_sha256 = "{hashlib.sha256(tok.encode()).hexdigest()}"\n'
                    f'groups = ["{"staff" if name == "tess" else "students"}"]\n' for name, tok in TOKENS.items())
    return f"""
[relay]
db = "{db}"
{f'redis_url = "{redis_url}"' if redis_url else ""}
[profiles.course]
endpoint = "{upstream_url}"
protocol = "seed"
key_env = "CLASS_KEY"
price_per_1m = 12.0
max_tokens_cap = 64
[limits.default]
qps = 1
tokens_per_day = 10
[limits.groups.students]
qps = 5
tokens_per_day = 60
[limits.groups.staff]
qps = 0
tokens_per_day = 0
{users}"""


class Relay:
    def __init__(self, config: Path, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "CLASS_KEY": KEY}
        env.pop("JUPYTERHUB_API_TOKEN", None)
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "nb_model.cli", "relay", "--config", str(config),
                                      "--port", str(self.port)], env=env, stdout=open(log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                requests.get(self.url + "api/me", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError(log.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def get(self, path: str, user: str) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {TOKENS[user]}"}, timeout=10)

    def post(self, user: str, prompt: str, max_tokens: int = 8) -> requests.Response:
        return requests.post(self.url + "relay/course/v1/generate", headers={"Authorization": f"Bearer {TOKENS[user]}"},
                             json={"prompt": prompt, "max_tokens": max_tokens}, timeout=10)


@pytest.fixture
def relay(upstream, tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(_config(upstream.url, tmp_path / "state" / "relay.sqlite"))
    started = [Relay(config, tmp_path / "relay.log")]

    def restart():
        started[-1].stop()
        started.append(Relay(config, tmp_path / "relay.log"))
        return started[-1]

    started[0].restart = restart
    yield started[0]
    for r in started:
        if r.proc.poll() is None:
            r.stop()


def test_a_kernel_finds_the_service_and_its_footer_shows_what_is_left(relay, upstream, shell, monkeypatch, capsys):
    from nb_model.config import env as hub_env
    hub_env._found.clear()
    monkeypatch.setenv("NB_MODEL_HUB_URL", relay.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKENS["ada"])
    shell.run_line_magic("generate", "profiles")
    assert "* hub:course" in capsys.readouterr().out
    shell.run_cell_magic("generate", "--max-tokens 5", "Tell ada about snow")
    out = capsys.readouterr().out
    assert "snow0 snow1 snow2 snow3 snow4" in out
    used = relay.get("api/me", "ada").json()["tokens_used_today"]
    assert used > 0 and f"{60 - used:,} of 60 tokens left today (UTC)" in out, out
    shell.run_line_magic("generate", "usage")
    assert "JupyterHub relay service, user ada: " in capsys.readouterr().out
    assert upstream.seen[-1]["ok"]
    assert KEY not in out and KEY not in relay.log.read_text()


def test_limits_follow_groups_and_a_token_is_charged_to_its_own_user(relay):
    assert relay.get("api/me", "tess").json()["limits"] == {"qps": 0.0, "tokens_per_day": 0, "from": "group staff"}
    for _ in range(20):  # ada spends her 60 tokens
        reply = relay.post("ada", "ada writes")
        if reply.status_code == 429 and "daily" in reply.text:
            break
        time.sleep(0.21)
    message = reply.json()["error"]["message"]
    assert reply.status_code == 429 and "\n" not in message
    assert message.startswith("nb_model relay: daily token limit") and "user 'ada'" in message
    assert int(reply.headers["Retry-After"]) > 0
    assert relay.post("bob", "bob writes").status_code == 200  # bob's budget is his own
    assert relay.get("api/me", "bob").json()["tokens_used_today"] < relay.get("api/me", "ada").json()["tokens_used_today"]
    bad = requests.post(relay.url + "relay/course/v1/generate", headers={"Authorization": "Bearer nope"},
                        json={"prompt": "x"}, timeout=10)
    assert bad.status_code == 403 and bad.json()["error"]["type"] == "permission_error"
    assert requests.get(relay.url + "api/usage", timeout=10).status_code == 401


def test_the_usage_page_and_counts_survive_a_restart(relay):
    prompts = {"ada": "ada writes", "bob": "鲍勃写一首关于雪的诗"}  # counted by the shared estimator, CJK too
    for user, prompt in prompts.items():
        assert relay.post(user, prompt).status_code == 200
    teacher = relay.get("api/usage", "tess").json()
    assert teacher["all_users"] and [u["user"] for u in teacher["users"]] == ["ada", "bob"]
    answer = " ".join(f"snow{i}" for i in range(8))
    for line in teacher["users"]:
        tokens = estimate_tokens(prompts[line["user"]]) + estimate_tokens(answer)
        assert line["today"] == {"requests": 1, "tokens": tokens, "cost": pytest.approx(tokens * 12.0 / 1e6)}
    own = relay.get("api/usage", "bob").json()
    assert not own["all_users"] and [u["user"] for u in own["users"]] == ["bob"]
    page = relay.get("", "tess").text
    assert "<td>ada</td>" in page and "<td>bob</td>" in page
    assert "<td>ada</td>" not in relay.get("", "bob").text
    me = relay.get("api/me", "ada").json()
    again = relay.restart()
    assert again.get("api/usage", "tess").json()["users"] == teacher["users"]
    assert again.get("api/me", "ada").json()["tokens_used_today"] == me["tokens_used_today"]


def test_a_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "relay.toml"
    bad.write_text('[profiles.course]\nendpoint = "https://api.example.com"\n[limits.groups.students]\nqps = -1\n')
    done = subprocess.run([sys.executable, "-m", "nb_model.cli", "relay", "--config", str(bad)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "[limits.groups.students]: qps must be" in done.stderr
    with pytest.raises(ConfigError, match="unknown section"):
        ServiceConfig({"profile": {}})


def test_the_most_generous_group_wins_and_a_users_own_entry_beats_groups():
    config = ServiceConfig({"profiles": {"p": {"endpoint": "https://x.example"}},
                            "limits": {"default": {"tokens_per_day": 5},
                                       "groups": {"a": {"tokens_per_day": 100, "qps": 1},
                                                  "b": {"tokens_per_day": 0, "qps": 2}},
                                       "users": {"zoe": {"tokens_per_day": 7}}}})
    assert config.limits_for("kim", ["a", "b"]) == Limits(2.0, 0, "group b")
    assert config.limits_for("kim", ["a", "x"]) == Limits(1.0, 100, "group a")
    assert config.limits_for("kim", []).tokens_per_day == 5
    assert config.limits_for("zoe", ["b"]) == Limits(0.0, 7, "user zoe")


@pytest.mark.redis
def test_counts_in_redis_survive_a_restart(upstream, tmp_path, redis_server):
    config = tmp_path / "relay.toml"
    config.write_text(_config(upstream.url, tmp_path / "relay.sqlite", redis_server))
    relay = Relay(config, tmp_path / "relay.log")
    try:
        before = relay.get("api/me", "ada").json()["tokens_used_today"]  # the Redis server is shared
        assert relay.post("ada", "ada writes").status_code == 200
        used = relay.get("api/me", "ada").json()["tokens_used_today"]
        assert used > before
    finally:
        relay.stop()
    (tmp_path / "relay.sqlite").unlink()  # only Redis keeps the counts now
    relay = Relay(config, tmp_path / "relay.log")
    try:
        assert relay.get("api/me", "ada").json()["tokens_used_today"] == used
    finally:
        relay.stop()


def test_an_upstream_echoing_the_key_never_shows_it_in_replies_or_the_services_log(tmp_path):
    """A scripted upstream puts the key in 401 and 500 bodies, in a header and in the middle of a stream
    (split across two writes): the service's replies and its log have it masked."""

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            prompt = body["prompt"]
            status = 401 if "401" in prompt else 500 if "500" in prompt else 200
            if "stream" in prompt:
                half = len(KEY) // 2
                chunks = [json.dumps({"text": "a"}).encode() + b"\n",
                          b'{"text": "upstream echoed ' + KEY[:half].encode(), KEY[half:].encode() + b'"}\n', END_LINE]
                ctype = "application/x-ndjson"
            else:
                chunks = [json.dumps({"error": {"message": f"invalid api key {KEY} (Bearer {KEY})"}}).encode()]
                ctype = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("X-Debug-Key", KEY)
            self.send_header("Content-Length", str(sum(map(len, chunks))))
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = tmp_path / "relay.toml"
    config.write_text(_config(f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path / "relay.sqlite"))
    relay = Relay(config, tmp_path / "relay.log")
    try:
        replies = []
        for prompt, stream in (("say 401", False), ("say 500", False), ("stream it", True)):
            replies.append(requests.post(
                relay.url + "relay/course/v1/generate", json={"prompt": prompt, "max_tokens": 8}, timeout=10,
                headers={"Authorization": f"Bearer {TOKENS['tess']}", **({"X-Stream": "true"} if stream else {})}))
        assert [r.status_code for r in replies] == [401, 500, 200], [r.text for r in replies]
        for reply in replies:
            assert KEY not in reply.text and KEY not in str(reply.headers), reply.text
            assert KEY[:12] not in reply.text  # not even its first half
        assert "invalid api key" in replies[0].text and "upstream echoed" in replies[2].text  # the rest is kept
    finally:
        relay.stop()
        httpd.shutdown()
        httpd.server_close()
    log = relay.log.read_text()
    assert "relay/course/v1/generate" in log or "course/v1/generate" in log, log
    assert KEY not in log and KEY[:12] not in log, log


def test_a_large_body_is_413_in_one_line_and_never_stalls_other_callers(relay):
    """Over `[relay] max_body_bytes` (default 1 MiB): 413 from the Content-Length before the body is read, or
    as a chunked body passes it. Under it, parsing and counting run in a thread while others are served."""
    url, auth = relay.url + "relay/course/v1/generate", {"Authorization": f"Bearer {TOKENS['tess']}"}
    start = time.monotonic()
    huge = requests.post(url, data=b'{"prompt": "' + b"7," * 25_000_000 + b'"}', headers=auth, timeout=30)
    assert huge.status_code == 413 and time.monotonic() - start < 5, huge.text
    message = huge.json()["error"]["message"]
    assert "\n" not in message and "1,048,576 bytes" in message and "max_body_bytes" in message

    def chunks():
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'
    try:  # no Content-Length: cut off at the limit (the connection is dropped; nothing past it is read)
        cut = requests.post(url, data=chunks(), headers=auth, timeout=30).status_code
    except requests.RequestException:
        cut = "dropped"
    assert cut in (400, 413, "dropped"), cut
    assert requests.post(relay.url + "relay/course/v1/generate", data=b"x" * 2_000_000, timeout=30,
                         headers={"Authorization": "Bearer nope"}).status_code == 403  # refused before reading

    # just under the limit, digits and punctuation (the slowest text to count): others are answered meanwhile
    body = json.dumps({"prompt": "1,2,3,4,5,6,7,8,9," * 57_000, "max_tokens": 8}).encode()
    assert len(body) < 1 << 20
    done = threading.Event()
    waits = []

    def poll():
        while not done.is_set():
            t = time.monotonic()
            assert relay.get("api/me", "bob").status_code == 200
            waits.append(time.monotonic() - t)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(0.1)
    requests.post(url, data=body, headers=auth, timeout=30)
    done.set()
    poller.join(10)
    assert len(waits) >= 3 and max(waits) < 0.3, waits  # counting this body on the event loop takes ~0.7 s
