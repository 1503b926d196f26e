"""Fixtures and helpers shared by several test files."""

import time

import pytest
from nb_model.client import client_for
from nb_model.sandbox import SandboxServer


@pytest.fixture
def slow():
    """A sandbox streaming 25 tokens/s, so a run lasts long enough to press Stop."""
    with SandboxServer(port=0, qps=0, token_rate=25) as server:
        yield server


def direct(prompt, **params):
    """The same request straight through the client core (the sandbox is deterministic)."""
    return client_for("env").generate(prompt, cache="off", **params)


def until(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def run_panel(panel, timeout=10):
    panel.generate_button.click()
    assert panel.wait(timeout), "the run did not end"
