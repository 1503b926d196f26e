"""A real JupyterHub classroom: per-student budgets through the service, the teacher's page."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from nb_model.tokens import estimate_tokens

from conftest import _free_port, missing_part

pytestmark = [pytest.mark.hub, pytest.mark.timeout(600)]


ROOT = Path(__file__).resolve().parents[2]


DOC = ROOT / "docs" / "classroom.md"


VENV_BIN = Path(sys.executable).parent


KEY = "sk-class-" + secrets.token_hex(16)


DRIVER = secrets.token_hex(24)


SERVICE_USER, ADA, GRACE, TEACHER = "nbmt_relay", "nbmt_ada", "nbmt_grace", "nbmt_teacher"


STUDENT_TOKENS_PER_DAY = 260


MAX_TOKENS = 40


# the stream's last line, as the sandbox ends its streams (the client takes a stream without one as cut)
END_LINE = b'{"text": "", "finish_reason": "stop"}\n'


def doc_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, f"docs/classroom.md should have one ```{language} block"
    return blocks[0]


def hub_config(site: str) -> str:
    """The doc's jupyterhub_config.py with its site settings replaced by `site`."""
    text = doc_block("python")
    start, end = "# --- site settings: change these ---\n", "# --- end of site settings ---\n"
    assert start in text and end in text
    return text[:text.index(start)] + site + text[text.index(end) + len(end):]


def relay_config(db: str, endpoint: str, key_file: str) -> str:
    """The doc's relay.toml, pointed at this test's files and upstream, with a small student budget."""
    text = doc_block("toml")
    swaps = [('db = "/var/lib/nb_model/relay.sqlite"', f'db = "{db}"'),
             ('endpoint = "https://api.example.com"', f'endpoint = "{endpoint}"'),
             ('key_file = "/etc/nb_model/model_api_key"', f'key_file = "{key_file}"'),
             ("tokens_per_day = 30000", f"tokens_per_day = {STUDENT_TOKENS_PER_DAY}")]
    for old, new in swaps:
        assert old in text, old
        text = text.replace(old, new)
    return text


class Upstream:
    """The seed API as its docs describe it: POST /v1/generate, Bearer key, {"output"} or JSON lines {"text"}."""

    def __init__(self):
        self.seen: list[dict] = []  # {"auth", "prompt", "text"} per answered request
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {KEY}":
                    out = b'{"error": {"message": "invalid api key"}}'
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                words = [f"rain{i}" for i in range(min(int(body.get("max_tokens") or 16), 12))]
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                with upstream.lock:
                    upstream.seen.append({"auth": auth, "prompt": body["prompt"], "text": "".join(pieces)})
                if self.headers.get("X-Stream", "").lower() == "true":
                    out = b"".join(json.dumps({"text": p}).encode() + b"\n" for p in pieces) + END_LINE
                    ctype = "application/x-ndjson"
                else:
                    out, ctype = json.dumps({"output": "".join(pieces)}).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def tokens_of(self, who: str) -> tuple[int, int]:
        """(requests, tokens) answered for prompts naming `who`, counted as the relay's meter counts."""
        rows = [r for r in self.seen if who in r["prompt"]]
        return len(rows), sum(estimate_tokens(r["prompt"]) + estimate_tokens(r["text"]) for r in rows)


def _proxy_binary() -> str | None:
    """On PATH, else where scripts/setup.sh puts it ($NB_MODEL_CHP, default ~/.cache/nb_model/chp)."""
    found = shutil.which("configurable-http-proxy")
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    prefix = Path(os.environ.get("NB_MODEL_CHP") or home / ".cache" / "nb_model" / "chp")
    binary = prefix / "node_modules" / ".bin" / "configurable-http-proxy"
    return found or (str(binary) if binary.exists() else None)


def _usable_by_others(path: str) -> bool:
    """True if other OS users can reach and run `path` (every directory above it searchable)."""
    real = Path(os.path.realpath(path))
    return all(os.stat(p).st_mode & 0o001 for p in [real, *real.parents])


def _python_for_users(base: Path) -> Path | None:
    """A bin/ whose python, jupyterhub-singleuser and nb-model every OS user can run: this venv's, else (an
    interpreter under a private home, e.g. pyenv in /root) a venv of the system's python of the same version
    that loads this venv's site-packages."""
    if _usable_by_others(sys.executable):
        return VENV_BIN
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = next((p for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}") if os.path.exists(p)), None)
    if system is None or not _usable_by_others(system):
        return None
    shim = base / "python"
    subprocess.run([system, "-m", "venv", "--without-pip", str(shim)], check=True)
    site = next((shim / "lib").glob("python*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    (site / "nb_model_venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    for name, target in (("jupyterhub-singleuser", "jupyterhub.singleuser:main"), ("nb-model", "nb_model.cli:main")):
        module, func = target.split(":")
        script = shim / "bin" / name
        script.write_text(f"#!{shim / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\n"
                          f"sys.exit({func}())\n")
        script.chmod(0o755)
    for d in (shim, *shim.rglob("*")):
        if d.is_dir():
            d.chmod(0o755)
    return shim / "bin"


def _os_user(name: str) -> bool:
    """Create the OS user `name` (with a home) unless it exists; True if created here."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                       capture_output=True)
        return True


class Hub:
    def __init__(self, base: Path, upstream: Upstream, proxy: str, bin_dir: Path):
        self.base, self.upstream, self.proxy, self.bin = base, upstream, proxy, bin_dir
        self.pick_ports()
        self.proc: subprocess.Popen | None = None
        self.log = base / "hub" / "hub.log"

    def write(self) -> None:
        hubdir, relaydir = self.base / "hub", self.base / "relay"
        hubdir.mkdir(mode=0o700, exist_ok=True)
        relaydir.mkdir(mode=0o700, exist_ok=True)
        svc = pwd.getpwnam(SERVICE_USER)
        key_file, toml = relaydir / "model_api_key", relaydir / "relay.toml"
        key_file.write_text(KEY + "\n")
        toml.write_text(relay_config(str(relaydir / "relay.sqlite"), self.upstream.url, str(key_file)))
        for path in (relaydir, key_file, toml):
            os.chown(path, svc.pw_uid, svc.pw_gid)
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        self.key_file, self.relay_toml = key_file, toml
        site = (f"service_user = {SERVICE_USER!r}\nrelay_config = {str(toml)!r}\n"
                f"service_url = 'http://127.0.0.1:{self.service_port}'\n"
                f"c.JupyterHub.load_groups = {{'students': {{'users': [{ADA!r}, {GRACE!r}]}}, "
                f"'staff': {{'users': [{TEACHER!r}]}}}}\n")
        test_only = f"""
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{self.hub_port}'
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.api_port}'
c.ConfigurableHTTPProxy.command = [{self.proxy!r}]
c.JupyterHub.db_url = 'sqlite:///{hubdir}/jupyterhub.sqlite'
c.JupyterHub.cookie_secret_file = '{hubdir}/cookie_secret'
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allow_all = True
c.Spawner.cmd = [{str(self.bin / 'jupyterhub-singleuser')!r}]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {{'NB_MODEL_LOCAL': 'off'}}
c.JupyterHub.services.append({{'name': 'test-driver', 'api_token': {DRIVER!r}}})
c.JupyterHub.load_roles.append({{'name': 'test-driver', 'services': ['test-driver'], 'scopes': [
    'admin:users', 'admin:servers', 'tokens', 'access:servers', 'read:services', 'list:services',
    'access:services', 'read:users']}})
"""
        (hubdir / "jupyterhub_config.py").write_text(hub_config(site) + test_only)
        os.chmod(hubdir / "jupyterhub_config.py", 0o600)

    def pick_ports(self) -> None:
        self.port, self.hub_port, self.api_port, self.service_port = (_free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> None:
        """Start the Hub (which starts the service); on a port taken meanwhile by another process, again
        on new ports."""
        for attempt in range(attempts):
            if attempt:
                self.stop()
                self.pick_ports()
                self.write()
            if self._start_once():
                return
        raise AssertionError(f"jupyterhub or its nb-model service did not come up:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MODEL_", "JUPYTERHUB_", "JPY_"))}
        env["PATH"] = f"{self.bin}:{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
                                     cwd=self.base / "hub", env=env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                requests.get(f"{self.url}/hub/api/", timeout=2).raise_for_status()
                ours = requests.get(f"http://127.0.0.1:{self.service_port}/services/nb-model/api/me", timeout=2)
                if ours.status_code == 401 and "nb_model relay" in ours.text:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.3)
        return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api/{path}", timeout=30,
                                headers={"Authorization": f"token {DRIVER}"}, **kwargs)

    def service_pid(self) -> int:
        return int(self.api("GET", "services/nb-model").json()["pid"])

    def token_for(self, user: str) -> str:
        reply = self.api("POST", f"users/{user}/tokens",
                         json={"scopes": ["access:services!service=nb-model"], "note": "test"})
        assert reply.status_code in (200, 201), reply.text
        return reply.json()["token"]

    def spawn(self, user: str) -> None:
        reply = self.api("POST", f"users/{user}/server")
        assert reply.status_code in (201, 202, 400), reply.text  # 400: already running
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server did not start:\n{self.log_tail()}")


class Kernel:
    """A real kernel in a user's single-user server, driven over its REST API and websocket (via the proxy)."""

    def __init__(self, hub: Hub, user: str):
        self.hub, self.user = hub, user
        self.base = f"{hub.url}/user/{user}/api"
        self.headers = {"Authorization": f"token {DRIVER}"}
        reply = requests.post(f"{self.base}/kernels", json={"name": "python3"}, headers=self.headers, timeout=60)
        assert reply.status_code == 201, reply.text
        self.id = reply.json()["id"]
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float = 120) -> str:
        """Every text the cell showed (streams, displays and their updates, errors as 'Name: value')."""
        return asyncio.run(self._run(code, timeout))

    async def _run(self, code: str, timeout: float) -> str:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = self.base.replace("http://", "ws://") + f"/kernels/{self.id}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers=self.headers))
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": self.user, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        texts: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                raw = await asyncio.wait_for(ws.read_message(), max(deadline - time.monotonic(), 0.1))
                assert raw is not None, "the kernel's websocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    texts.append(content["text"])
                elif kind in ("display_data", "update_display_data", "execute_result"):
                    texts.append(content.get("data", {}).get("text/plain", ""))
                elif kind == "error":
                    texts.append(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    return "\n".join(texts)
        finally:
            ws.close()


@pytest.fixture(scope="module")
def hub():
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        missing_part("the classroom test creates OS users (useradd) and runs each student as one: it needs "
                     "root, as in CI")
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        missing_part("jupyterhub is not installed (pip install 'nb_model[hub]'; scripts/test.sh does it)")
    proxy = _proxy_binary()
    if proxy is None:
        missing_part("configurable-http-proxy is not installed (scripts/setup.sh with the hub extra installs it "
                     "from npm into ~/.cache/nb_model/chp)")
    base = Path(tempfile.mkdtemp(prefix="nb-model-hub-"))
    os.chmod(base, 0o711)  # users may pass through to their own files, not list or read the others'
    bin_dir = _python_for_users(base)
    if bin_dir is None:
        shutil.rmtree(base, ignore_errors=True)
        missing_part(f"the Python interpreter ({os.path.realpath(sys.executable)}) is in a directory other OS "
                     "users cannot enter, and there is no system python of the same version")
    created = [name for name in (SERVICE_USER, ADA, GRACE, TEACHER) if _os_user(name)]
    upstream = Upstream()
    hub = Hub(base, upstream, proxy, bin_dir)
    try:
        hub.write()
        hub.start()
        yield hub
    finally:
        hub.stop()
        upstream.httpd.shutdown()
        upstream.httpd.server_close()
        shutil.rmtree(base, ignore_errors=True)
        for name in created:
            subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture(scope="module")
def kernels(hub):
    """A kernel of each student, as that student's OS user, with nb_model loaded."""
    out = {}
    for user in (ADA, GRACE):
        hub.spawn(user)
        out[user] = Kernel(hub, user)
        shown = out[user].run("%load_ext nb_model\nimport os\nprint(os.getuid(), os.environ['JUPYTERHUB_USER'])")
        assert shown.split() == [str(pwd.getpwnam(user).pw_uid), user], shown
    return out


def generate(kernel: Kernel, who: str, n: int) -> str:
    return kernel.run(f"%%generate --no-cache --max-tokens {MAX_TOKENS}\n{who} asks about rain, question {n}")


def test_a_students_generate_streams_through_the_service_with_the_teachers_key(hub, kernels):
    ada = kernels[ADA]
    profiles = ada.run("%generate profiles")
    assert re.search(r"\* hub:course", profiles), profiles  # found by itself, and the default
    shown = generate(ada, ADA, 1)
    assert "rain0 rain1" in shown, shown
    assert re.search(r"tokens left today \(UTC\)", shown), shown
    assert hub.upstream.seen and all(r["auth"] == f"Bearer {KEY}" for r in hub.upstream.seen)
    assert KEY not in shown and KEY not in hub.log.read_text()  # the service's log goes to the Hub's
    usage = ada.run("%generate usage")
    assert f"JupyterHub relay service, user {ADA}:" in usage and "1 requests/s" in usage, usage


def test_a_students_kernel_cannot_read_the_key(hub, kernels):
    pid = hub.service_pid()
    assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam(SERVICE_USER).pw_uid  # the service's own account
    probe = f"""
import os
for path in ['/proc/{pid}/environ', '/proc/{pid}/mem', {str(hub.key_file)!r}, {str(hub.relay_toml)!r},
             '/proc/{pid}/cwd/', {str(hub.base / 'hub' / 'jupyterhub_config.py')!r}]:
    try:
        with open(path, 'rb') as f:
            print(path, 'READ', f.read(4096))
    except OSError as exc:
        print(path, 'denied', type(exc).__name__)
print('environ', dict(os.environ))
print('cmdline', open('/proc/{pid}/cmdline', 'rb').read())
"""
    shown = kernels[ADA].run(probe)
    assert KEY not in shown and KEY[9:] not in shown, "the key leaked into a student's kernel"
    for what in ("environ", "mem"):
        assert f"/proc/{pid}/{what} denied PermissionError" in shown, shown
    assert f"{hub.key_file} denied PermissionError" in shown and f"{hub.relay_toml} denied PermissionError" in shown
    assert "jupyterhub_config.py denied PermissionError" in shown
    assert "JUPYTERHUB_API_TOKEN" in shown  # the student's own token is there: it is all the kernel needs
    assert " READ " not in shown, shown


def test_budgets_are_per_student_and_over_them_429_says_so_in_one_line(hub, kernels):
    ada, grace = kernels[ADA], kernels[GRACE]
    # the rate: 1 request/s per student, a second request at once is refused in one line
    rate = grace.run(f"""
import os, requests
from nb_model.config import env as hub_env
url, _ = hub_env.service()
auth = {{"Authorization": "Bearer " + os.environ["JUPYTERHUB_API_TOKEN"]}}
replies = [requests.post(url + "relay/course/v1/generate", headers=auth,
                         json={{"prompt": "{GRACE} asks about rain, raw", "max_tokens": 5}}) for _ in range(2)]
print([r.status_code for r in replies])
print(replies[1].headers.get("Retry-After"), replies[1].json()["error"]["message"])
""")
    assert "[200, 429]" in rate, rate
    assert re.search(rf"1 nb_model relay: rate limit: user '{GRACE}' may send 1 requests per second; retry in "
                     r"\d\.\d\d s", rate), rate
    # the day: Ada spends her budget to the last reservation; the magic then shows one line, no traceback
    for n in range(2, 12):
        shown = generate(ada, ADA, n)
        if "daily token limit" in shown:
            break
    assert re.search(rf"HTTP 429 from hub:course: nb_model relay: daily token limit(?: reached)?: user '{ADA}' "
                     r"used \d+ of 260 tokens today \(UTC\)", shown), shown
    error_line = [line for line in shown.splitlines() if "daily token limit" in line]
    assert len(error_line) == 1 and "Traceback" not in shown, shown
    assert error_line[0].startswith("APIError: HTTP 429"), shown
    # Ada's token cannot name someone else's budget, whatever the request says
    other = ada.run(f"""
import os, requests, time
from nb_model.config import env as hub_env
url, _ = hub_env.service()
time.sleep(1.1)  # past the rate limit: what is left is the daily budget
r = requests.post(url + "relay/course/v1/generate",
                  headers={{"Authorization": "Bearer " + os.environ["JUPYTERHUB_API_TOKEN"], "X-User": "{GRACE}",
                           "JUPYTERHUB_USER": "{GRACE}"}},
                  json={{"prompt": "{ADA} as {GRACE}", "max_tokens": {MAX_TOKENS + 20}, "user": "{GRACE}"}})
print(r.status_code, r.json()["error"]["message"])
""")
    assert f"429 nb_model relay: daily token limit" in other and f"user '{ADA}'" in other, other
    # Grace's budget is untouched by Ada's
    time.sleep(1.1)
    shown = generate(grace, GRACE, 1)
    assert "rain0 rain1" in shown and "HTTP 429" not in shown, shown


def _usage(hub: Hub, token: str, path: str = "api/usage") -> requests.Response:
    return requests.get(f"{hub.url}/services/nb-model/{path}", headers={"Authorization": f"token {token}"},
                        timeout=30)


def _check_counts(data: dict, hub: Hub) -> None:
    lines = {u["user"]: u for u in data["users"]}
    assert set(lines) == {ADA, GRACE}, lines
    for user in (ADA, GRACE):
        requests_made, tokens = hub.upstream.tokens_of(user)
        assert requests_made >= 1
        assert lines[user]["today"]["tokens"] == tokens, (user, lines[user], tokens)
        assert lines[user]["today"]["requests"] == requests_made
        assert lines[user]["week"]["tokens"] == tokens
        assert lines[user]["today"]["cost"] == pytest.approx(tokens * 12.0 / 1e6)


def test_the_teachers_page_lists_each_student_and_a_student_sees_only_their_own(hub, kernels):
    for user in (ADA, GRACE):
        if not hub.upstream.tokens_of(user)[0]:  # run alone: each student generates once first
            assert "rain0" in generate(kernels[user], user, 0)
    teacher = hub.token_for(TEACHER)
    data = _usage(hub, teacher)
    assert data.status_code == 200, data.text
    assert data.json()["all_users"] is True
    _check_counts(data.json(), hub)
    page = _usage(hub, teacher, "")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    _, ada_tokens = hub.upstream.tokens_of(ADA)
    assert re.search(rf"<td>{ADA}</td><td>{ada_tokens}</td>", page.text), page.text
    assert f"<td>{GRACE}</td>" in page.text
    # a student: only her own line, on the page and in the JSON
    own = kernels[GRACE].run("""
import os, requests
from nb_model.config import env as hub_env
url, _ = hub_env.service()
auth = {"Authorization": "Bearer " + os.environ["JUPYTERHUB_API_TOKEN"]}
print(requests.get(url + "api/usage", headers=auth).json())
print(requests.get(url, headers=auth).text)
""")
    assert GRACE in own and ADA not in own, own
    assert "'all_users': False" in own
    # a browser without a token is sent to log in at the Hub (OAuth), then comes back
    login = requests.get(f"{hub.url}/services/nb-model/", allow_redirects=False, timeout=30)
    assert login.status_code == 302 and "/hub/api/oauth2/authorize" in login.headers["Location"], login.headers
    # a token without the service's scope is refused
    bare = hub.api("POST", f"users/{ADA}/tokens", json={"scopes": ["read:users:name!user"]}).json()["token"]
    assert _usage(hub, bare).status_code == 403


def test_budgets_survive_a_service_restart(hub, kernels):
    teacher = hub.token_for(TEACHER)
    ada = hub.token_for(ADA)
    before = _usage(hub, teacher).json()
    old_pid = hub.service_pid()
    hub.stop()  # the Hub stops its service (and the students' servers)
    hub.start()
    assert hub.service_pid() != old_pid
    after = _usage(hub, teacher).json()
    assert after["users"] == before["users"]
    _check_counts(after, hub)
    me = _usage(hub, ada, "api/me").json()
    assert me["tokens_used_today"] == hub.upstream.tokens_of(ADA)[1]  # the counter, settled to the real count
    refused = requests.post(f"{hub.url}/services/nb-model/relay/course/v1/generate",
                            headers={"Authorization": f"token {ada}"},
                            json={"prompt": f"{ADA} after the restart", "max_tokens": MAX_TOKENS}, timeout=30)
    assert refused.status_code == 429 and f"user '{ADA}'" in refused.json()["error"]["message"], refused.text
