"""Forward one request upstream and stream the reply back chunk by chunk (tornado's HTTP client).

Success replies are written and flushed as each chunk arrives; error replies
(small) are collected, the upstream key masked out of them, and passed on with
their status. Hop-by-hop and identifying headers are dropped both ways.
"""
from __future__ import annotations

from typing import Callable

from tornado import httputil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .redact import MASK

# request headers never sent upstream (the relay sets its own Authorization)
DROP_REQUEST = {"authorization", "cookie", "host", "connection", "keep-alive", "proxy-authorization",
                "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length",
                "accept-encoding", "x-xsrftoken", "x-csrftoken", "origin", "referer", "forwarded",
                "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
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


def request_headers(incoming: httputil.HTTPHeaders, key: str | None) -> dict[str, str]:
    headers = {name: value for name, value in incoming.get_all() if name.lower() not in DROP_REQUEST}
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

    def _mask(self, data: bytes) -> bytes:
        return data.replace(self.secret, MASK.encode()) if self.secret and data else data

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
            await self.handler.flush()  # the status line too, if no chunk came
        except Exception:  # noqa: BLE001 - the caller is gone already
            pass
        self.handler.request.connection.close()

    def finish(self) -> None:
        """End the reply: close the stream, or send the collected error with its status."""
        body = b""
        if not self.streaming:
            self._send_head()
            body = self._mask(bytes(self.error_body))
        # an APIHandler would call any reply JSON unless told the upstream's type
        self.handler.finish(body, set_content_type=self.headers.get("Content-Type", "application/json"))


async def forward(handler, url: str, key: str | None, *, connect_timeout: float, request_timeout: float,
                  on_start: Callable[[int, str], None] = lambda status, ctype: None,
                  on_chunk: Callable[[bytes], None] = lambda data: None) -> Passthrough:
    """Send `handler`'s request to `url` (adding `key`) and pass the reply through as it comes.

    Raises `UpstreamFailed` if nothing came back; a failure after the reply
    started cuts the caller's connection, so it sees an unfinished stream.
    """
    request = handler.request
    reply = Passthrough(handler, key, on_start, on_chunk)
    handler.passthrough = reply
    body = request.body if request.method not in ("GET", "HEAD", "DELETE") else None
    upstream = HTTPRequest(
        url + (f"?{request.query}" if request.query else ""), method=request.method,
        headers=request_headers(request.headers, key), body=body, allow_nonstandard_methods=True,
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
