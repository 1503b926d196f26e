"""Shared fixtures: a real sandbox HTTP server on loopback, a real IPython shell, a clean env."""
from __future__ import annotations

import os

import pytest

ENV_VARS = ("MODEL_API_KEY", "NB_MODEL_API_KEY", "NB_MODEL_ENDPOINT", "NB_MODEL_PROTOCOL", "NB_MODEL_MODEL",
            "NB_MODEL_PROFILE", "NB_MODEL_CONFIG", "NB_MODEL_CACHE", "NB_MODEL_CACHE_URL", "NB_MODEL_RELAY_URL",
            "NB_MODEL_RELAY_TOKEN", "NB_MODEL_LOCAL", "JPY_SESSION_NAME")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting leaks in from the developer's machine; each test runs in its own folder."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NB_MODEL_LOCAL", "off")
    monkeypatch.chdir(tmp_path)
    from nb_model import client, config
    client._clients.clear()
    config.set_session_profile(None)
    yield


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
