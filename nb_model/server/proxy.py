"""Forward one request upstream and stream the reply back chunk by chunk (tornado's HTTP client).

Success replies are written and flushed as each chunk arrives; error replies
(small) are collected and passed on with their status. The upstream key is
masked out of both, also when it is split across chunks. Only an allow-list of
request headers goes upstream, and no query string (the protocols use none, and
a Jupyter ``?token=`` must stay here); hop-by-hop and identifying reply headers
are dropped.
"""
from __future__ import annotations

from typing import Callable

from tornado import httputil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .redact import MASK

MASK_BYTES = MASK.encode()

# the only request headers sent upstream (the relay adds its own Authorization)
PASS_REQUEST = frozenset({"content-type", "accept", "x-stream", "user-agent"})
# and, to the sandbox only, its test controls
PASS_SANDBOX = PASS_REQUEST | {"x-sandbox-fault", "x-sandbox-rate"}
# reply headers never passed back (tornado frames the body itself)
DROP_REPLY = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server",
              "date", "set-cookie", "www-authenticate", "proxy-authenticate", "trailer", "upgrade"}
ERROR_BODY_LIMIT = 64 << 10
MAX_CLIENTS = 64

_client: AsyncHTTPClient | None = None


class ClientGone(Exception):
    """The caller hung up: stop reading the upstream reply."""


class UpstreamFailed(Exception):
    """No reply from upstream: `status` is 502 (unreachable) or 504 (timed out)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def http_client() -> AsyncHTTPClient:
    """One shared client per process, allowing many concurrent streams."""
    global _client
    if _client is None:
        _client = AsyncHTTPClient(force_instance=True, max_clients=MAX_CLIENTS)
    return _client


def request_headers(incoming: httputil.HTTPHeaders, key: str | None,
                    allow: frozenset[str] = PASS_REQUEST) -> dict[str, str]:
    """The `allow`ed incoming headers, plus the upstream key as a Bearer token."""
    headers = {name: value for name, value in incoming.get_all() if name.lower() in allow}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


class Passthrough:
    """The state of one forwarded reply, driven by tornado's header and body callbacks."""

    def __init__(self, handler, secret: str | None, on_start: Callable[[int, str], None],
                 on_chunk: Callable[[bytes], None]):
        self.handler = handler
        self.secret = secret.encode() if secret else None
        self.on_start, self.on_chunk = on_start, on_chunk
        self.status, self.reason = 502, "Bad Gateway"
        self.headers = httputil.HTTPHeaders()
        self.streaming = False  # status and headers sent, body flowing
        self.error_body = bytearray()
        self.client_gone = False
        self._held = b""  # the end of the last chunk, while it could be the start of the key

    def _mask(self, data: bytes, final: bool = False) -> bytes:
        """`data` with the key masked, also across chunks: a tail that could start the key is held back
        until the next chunk; at the end (`final`) a held tail is masked too."""
        if not self.secret:
            return data
        data = (self._held + data).replace(self.secret, MASK_BYTES)
        keep = _key_start(data, self.secret)
        self._held = b""
        if keep and final:
            return data[:-keep] + MASK_BYTES
        if keep:
            data, self._held = data[:-keep], data[-keep:]
        return data

    def header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            start = httputil.parse_response_start_line(line.strip())
            self.status, self.reason = start.code, start.reason
            self.headers = httputil.HTTPHeaders()
        elif line.strip():
            self.headers.parse_line(line)
        elif self.status < 400 and not self.streaming:
            self._send_head()
            self.streaming = True
            self.on_start(self.status, self.headers.get("Content-Type", ""))

    def _send_head(self) -> None:
        handler = self.handler
        handler.set_status(self.status, self.reason or None)
        seen = set()
        for name, value in self.headers.get_all():
            lname = name.lower()
            if lname in DROP_REPLY or lname.startswith("access-control-") or (
                    self.secret and self.secret.decode() in value):
                continue
            (handler.add_header if lname in seen else handler.set_header)(name, value)
            seen.add(lname)

    def body_chunk(self, data: bytes):
        if self.client_gone:
            raise ClientGone()
        if not self.streaming:
            if len(self.error_body) < ERROR_BODY_LIMIT:
                self.error_body += data
            return None
        self.on_chunk(data)
        self.handler.write(self._mask(data))
        return self.handler.flush()  # tornado >= 6.6 waits for it before reading on

    async def cut(self) -> None:
        """Deliver what was written, then drop the connection without the final chunk."""
        try:
            self.handler.write(self._mask(b"", final=True))
            await self.handler.flush()  # the status line too, if no chunk came
        except Exception:  # noqa: BLE001 - the caller is gone already
            pass
        self.handler.request.connection.close()

    def finish(self) -> None:
        """End the reply: close the stream, or send the collected error with its status."""
        if not self.streaming:
            self._send_head()
        body = self._mask(b"" if self.streaming else bytes(self.error_body), final=True)
        # an APIHandler would call any reply JSON unless told the upstream's type
        self.handler.finish(body, set_content_type=self.headers.get("Content-Type", "application/json"))


def _key_start(data: bytes, secret: bytes) -> int:
    """Length of the longest end of `data` that is a proper start of `secret` (0 if none)."""
    for size in range(min(len(secret) - 1, len(data)), 0, -1):
        if data.endswith(secret[:size]):
            return size
    return 0


async def forward(handler, url: str, key: str | None, *, connect_timeout: float, request_timeout: float,
                  body: bytes | None = None, allow_headers: frozenset[str] = PASS_REQUEST,
                  on_start: Callable[[int, str], None] = lambda status, ctype: None,
                  on_chunk: Callable[[bytes], None] = lambda data: None) -> Passthrough:
    """Send `handler`'s request (or `body` instead of its body) to `url`, adding `key`, without the
    caller's query string, and pass the reply through as it comes.

    Raises `UpstreamFailed` if nothing came back; a failure after the reply
    started cuts the caller's connection, so it sees an unfinished stream.
    """
    request = handler.request
    reply = Passthrough(handler, key, on_start, on_chunk)
    handler.passthrough = reply
    if body is None and request.method not in ("GET", "HEAD", "DELETE"):
        body = request.body
    upstream = HTTPRequest(
        url, method=request.method,
        headers=request_headers(request.headers, key, allow_headers), body=body, allow_nonstandard_methods=True,
        follow_redirects=False, decompress_response=True, connect_timeout=connect_timeout,
        request_timeout=request_timeout, header_callback=reply.header_line, streaming_callback=reply.body_chunk)
    try:
        await http_client().fetch(upstream, raise_error=False)
    except ClientGone:
        return reply
    except Exception as exc:  # noqa: BLE001 - every transport failure becomes one status
        if reply.client_gone:
            return reply
        if reply.streaming:  # cut mid-reply: cut the caller too, so it sees the stream unfinished
            await reply.cut()
            return reply
        timed_out = isinstance(exc, HTTPClientError) and "timeout" in str(exc).lower()
        what = "timed out" if timed_out else f"failed ({_describe(exc)})"
        raise UpstreamFailed(what, 504 if timed_out else 502) from None
    if not reply.client_gone:
        reply.finish()
    return reply


def _describe(exc: Exception) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "resolve" in text:
        return "host not found"
    if "ssl" in text or "certificate" in text:
        return "TLS error"
    return type(exc).__name__
