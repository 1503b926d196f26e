"""Fixtures and helpers shared by several test files."""

import pytest


@pytest.fixture
def cached(shell, sandbox, use_endpoint, monkeypatch):
    """The magic against the sandbox with the default cache on (the fallback file in the test's folder)."""
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox)
    shell.user_ns["topic"] = "tides"
    return shell
