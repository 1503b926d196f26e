"""One-line notices ("nb_model: using the embedded sandbox at …"), and notices said once per topic.

Where a notice goes is set by whoever presents nb_model: by default a line on stderr; `%load_ext nb_model`
(`nb_model.magics.register`) installs a handler that shows it as a muted line in the notebook. Nothing
here imports IPython or any display code, so the core can say things without knowing who listens.
"""
from __future__ import annotations

import sys
from typing import Callable


def _to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


_handler: Callable[[str], None] = _to_stderr
_said: set[str] = set()


def set_notice_handler(fn: Callable[[str], None] | None) -> Callable[[str], None]:
    """Send notices to `fn` (None: back to stderr); returns the handler it replaces."""
    global _handler
    previous, _handler = _handler, fn or _to_stderr
    return previous


def notice(msg: str) -> None:
    """Say `msg` (one line) wherever notices go."""
    _handler(msg)


def notice_once(topic: str, msg: str) -> None:
    """Say `msg` once per process for `topic` (e.g. one line for a Redis server that is down)."""
    if topic not in _said:
        _said.add(topic)
        notice(msg)


def forget_said() -> None:
    """Let every topic be said again (a reset cache, a fresh test)."""
    _said.clear()


def redis_topic(url: str) -> str:
    """One warning topic per Redis server, whatever uses it (cache, rate limit)."""
    return "redis-down:" + url.split("?", 1)[0].rsplit("@", 1)[-1]
