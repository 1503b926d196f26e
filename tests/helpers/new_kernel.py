"""Fixtures and helpers shared by several test files."""

import pytest

from conftest import shown


def text_of(cap) -> str:
    return cap.stdout + cap.stderr + "\n".join(shown(cap))


@pytest.fixture
def new_kernel(monkeypatch):
    """As in a kernel that has not started its embedded sandbox yet (servers the test starts are stopped)."""
    from nb_model.client import embedded
    started: dict = {}
    monkeypatch.setattr(embedded, "_embedded", started)
    yield started
    for server in list(started.values()):
        server.stop()
