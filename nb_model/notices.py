"""What the core says to whoever presents nb_model, and the little it asks of it.

One-line notices ("nb_model: using the embedded sandbox at …"), also once per topic; progress lines
updated in place ("indexing 120/400 files"); the notebook session the front end knows of. By default
notices and progress go to stderr; inside IPython, `nb_model.kernel` (installed when the package is
imported, and by `%load_ext nb_model`) shows them in the notebook and reads the session from the shell.
Nothing here imports IPython or any display code, so the core can speak without knowing who listens.
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


# -- progress lines -------------------------------------------------------------------------------------

def _stderr_line() -> Callable[[str, bool], None]:
    def show(text: str, done: bool = False) -> None:
        print("\r" + text, end="\n" if done else "", file=sys.stderr, flush=True)
    return show


_progress: Callable[[], Callable[[str, bool], None]] = _stderr_line


def set_progress_handler(factory: Callable[[], Callable[[str, bool], None]] | None) -> None:
    """Where progress lines go: `factory()` makes one line, updated in place (None: back to stderr)."""
    global _progress
    _progress = factory or _stderr_line


def progress_line() -> Callable[[str, bool], None]:
    """A new line that updates in place: call it with its text, and `done=True` the last time."""
    return _progress()


# -- the session the front end runs in ------------------------------------------------------------------

_session: Callable[[], str | None] = lambda: None  # noqa: E731


def set_session_finder(fn: Callable[[], str | None] | None) -> None:
    """How to learn the notebook session (e.g. IPython's `__session__`) when the environment does not say."""
    global _session
    _session = fn or (lambda: None)


def session_name() -> str | None:
    """The notebook session the front end knows of, if any."""
    return _session()
