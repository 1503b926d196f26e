"""Fixtures and helpers shared by several test files."""

import pytest
from nb_model import notices


@pytest.fixture
def collected():
    """Collect the client's one-line notices (and restore the previous handler)."""
    seen = []
    previous = notices.set_notice_handler(seen.append)
    yield seen
    notices.set_notice_handler(previous)
