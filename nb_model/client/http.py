"""HTTP plumbing of the client: the pooled session, reading a body as it arrives, and the one-line wording
of what went wrong (a server's message, a setting's fault, advice per status)."""
from __future__ import annotations

import json
import socket
import threading
from typing import Iterator

from .. import protocols
from ..config import ENDPOINT_EXAMPLE, Profile, redact_url
from ..errors import ConfigError


class _ServerError(Exception):
    """An error object inside a 200 reply (e.g. vLLM's mid-stream error event), with its status code if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


_in_flight = threading.local()  # .stream: the Stream whose request this thread is sending


def _tracked_pool(base):
    """A urllib3 pool class that hands the connection it lends to the Stream sending on this thread,
    so `Stream.close()` can wake a request still waiting for the server's first byte."""
    class Tracked(base):
        def _get_conn(self, timeout=None):
            conn = super()._get_conn(timeout)
            stream = getattr(_in_flight, "stream", None)
            if stream is not None:
                stream._conn = conn
            return conn
    return Tracked


def _session():
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)  # a batch keeps up to 64 in flight
    adapter.poolmanager.pool_classes_by_scheme = {"http": _tracked_pool(HTTPConnectionPool),
                                                  "https": _tracked_pool(HTTPSConnectionPool)}
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _body_pieces(raw) -> Iterator[bytes]:
    """Bytes as they arrive: whole HTTP chunks when chunked, else whatever one read returns."""
    if getattr(raw, "chunked", False) and hasattr(raw, "read_chunked"):
        yield from raw.read_chunked(decode_content=True)
        return
    while data := raw.read1(65536):
        yield data


def _server_message(resp) -> str:
    """The server's own error message, from JSON if it sent JSON, else a short text."""
    try:
        body = resp.content[:4000]
    except Exception:  # noqa: BLE001 - a broken body still gets its status reported
        return ""
    try:
        obj = json.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)
        return str(err)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text.lstrip().startswith("<"):
            return "the server sent an HTML error page"
        return " ".join(text.split())[:200]


def _advice(status: int, profile: Profile) -> str:
    if status == 401 or status == 403:
        return f"check the key: {profile.key_status()}"
    if status == 429:
        return "rate limited: lower the request rate or retry later"
    if status >= 500:
        return "the server failed: re-run the cell to retry"
    if status == 404:
        return f"check the endpoint and protocol of profile {profile.name!r}"
    return "fix the request parameters"


def _protocol_advice(profile: Profile) -> str:
    return f"check that profile {profile.name!r} uses the right protocol ({' | '.join(protocols.PROTOCOLS)})"


def _checked_key(profile: Profile) -> str | None:
    """The profile's key; one ConfigError line (the key never shown) unless it fits in an HTTP header."""
    name, key = profile.key_source()
    if key and not all("!" <= c <= "~" for c in key):  # printable ASCII, no spaces or line breaks
        raise ConfigError(f"the key in ${name} contains characters not allowed in an HTTP header: set it again")
    return key


def _setting_failure(exc: Exception, profile: Profile) -> ConfigError | None:
    """A transport error that is a setting's fault (a bad URL or header): a ConfigError, never retried."""
    from requests.exceptions import InvalidHeader, InvalidSchema, InvalidURL, MissingSchema
    if isinstance(exc, InvalidHeader):
        return ConfigError(f"profile {profile.name!r}: a request header holds characters HTTP does not allow: "
                           f"check the key ({profile.key_status()})")
    if isinstance(exc, (InvalidURL, InvalidSchema, MissingSchema)):
        return ConfigError(f"profile {profile.name!r}: endpoint {redact_url(profile.endpoint or '')!r} is not a "
                           f"valid http(s) URL ({type(exc).__name__}): write e.g. {ENDPOINT_EXAMPLE!r}")
    return None


def _wake_reader(conn) -> None:
    """Shut the connection's socket down so a read blocked in another thread returns now (close alone does not)."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
