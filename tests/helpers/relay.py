"""Fixtures and helpers shared by several test files."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from pathlib import Path

import pytest
import requests
from nb_model.config.env import PROFILES_ENV, TOKEN_ENV, URL_ENV
from nb_model.sandbox import SandboxServer


UPSTREAM_KEY = "sk-upstream-" + "u" * 28


KEY_ENV = "NBM_TEST_UPSTREAM_KEY"


RELAY_ENV = (URL_ENV, TOKEN_ENV, PROFILES_ENV)


OTHER_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim", "notebook")


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
