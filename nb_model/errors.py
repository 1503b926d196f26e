"""One small exception family; every message is one actionable line.

IPython shows `_render_traceback_()` instead of a traceback, so a failing cell
prints one line and the kernel stays usable.
"""
from __future__ import annotations


class NbModelError(Exception):
    """Base of every error nb_model raises on purpose."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class ConfigError(NbModelError):
    """A setting, profile or parameter is wrong; nothing was sent."""


class APIError(NbModelError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None,
                 headers: dict | None = None, partial=None, what: str | None = None):
        super().__init__(message)
        self.what = what or message  # the message without its advice, for retry notices
        self.status = status
        self.request_id = request_id
        self.headers = headers or {}  # the reply's headers: Retry-After hints for the retry loop
        self.partial = partial


class ConnectionFailed(APIError):
    """No answer: connection refused, DNS, timeout before any text."""


class StreamBroken(APIError):
    """The stream ended abnormally after text arrived; `partial` holds what came."""


class ProtocolError(NbModelError):
    """The server's reply is not in the expected wire format."""


class Interrupted(NbModelError):
    """The user stopped the generation; `partial` holds what came."""

    def __init__(self, message: str = "interrupted", partial=None):
        super().__init__(message)
        self.partial = partial
