"""The sandbox's HTTP request handler: plumbing (JSON errors, chunked writes, bodies), the small routes and
the generation routes (auth, QPS, validation, faults, the engine's paced pieces). See `server.py`."""
from __future__ import annotations

import json
import math
import secrets
import select
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Generator, Iterator
from urllib.parse import urlsplit

from . import tools as tool_use
from .engine import TokenStream, language_code
from .faults import NO_FAULT, Fault, parse_fault
from .minimal import MINIMAL_SEED
from .packing import packed_answer
from .schema import FAULTS as SCHEMA_FAULTS, corrupt, pieces
from .wire import BadRequest, ChatWire, CompletionWire, Reply, SeedWire, dumps

MIDSTREAM = 3        # tokens sent before a `malformed` / `error-event` fault strikes
FILTER_AFTER = 8     # tokens kept by the `filter` fault
_DISCONNECTS = (ConnectionError, TimeoutError)
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 429: "rate_limit_error"}
_FAULT_MESSAGES = {400: "simulated bad request", 401: "simulated authentication error",
                   429: "simulated rate limit", 500: "simulated server error",
                   502: "simulated bad gateway", 503: "simulated service unavailable",
                   504: "simulated gateway timeout"}
_HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
             b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx (nb_model sandbox)"
             b"</center>\r\n</body>\r\n</html>\r\n")


class _BadLength(ValueError):
    """A request whose Content-Length is not a number of bytes (answered 400)."""


def client_left(sock) -> bool:
    """True when the peer closed its side (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Abort(Exception):
    """Drop the connection now (fault injection or server shutdown)."""


class _ChunkedWriter:
    """Writes HTTP/1.1 chunks, each sent at once."""

    def __init__(self, wfile):
        self._wfile = wfile

    def write(self, data: bytes) -> None:
        if data:
            self._wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def close(self) -> None:
        self._wfile.write(b"0\r\n\r\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60  # an idle keep-alive connection is dropped after this
    server: Any  # server._HTTPServer, whose .sandbox is the SandboxServer

    # -- plumbing -------------------------------------------------------------
    def version_string(self) -> str:
        return "nb_model-sandbox"

    def handle_one_request(self) -> None:
        self.request_id = "req_" + secrets.token_hex(12)
        self.status_sent: int | None = None
        super().handle_one_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        self.status_sent = code
        if self.server.sandbox.wire != "minimal":
            self.send_header("X-Request-Id", self.request_id)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method) as JSON too."""
        self._error(code, message or self.responses.get(code, ("error",))[0], {"Connection": "close"})

    def log_message(self, format: str, *args: Any) -> None:  # request line only, never headers
        if not self.server.sandbox.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", dumps(obj), headers)

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        self._headers(status, content_type, len(body), headers)
        self.wfile.write(body)

    def _headers(self, status: int, content_type: str, length: int | None,
                 headers: dict[str, str] | None = None) -> None:
        """Status line and headers; `length` None means a chunked stream."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
            if self.server.sandbox.wire != "minimal":
                self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """The one JSON error reply: ``{"error": {"message", "type"}}``."""
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
        self._json(status, {"error": {"message": message, "type": kind}}, headers)

    def _stall(self, seconds: float) -> None:
        """A fault's silence: ends early (dropping the reply) when the client hangs up or the server stops,
        so a long stall never keeps a thread after its client left."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.server.sandbox._sleep(min(left, 0.1))
            if client_left(self.connection):
                raise _Abort()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit():
            raise _BadLength(f"Content-Length must be a whole number of bytes, got {length[:40]!r}")
        return self.rfile.read(int(length))

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            try:
                raw = self._read_body()
            except (_BadLength, ValueError) as exc:  # ValueError: a bad chunk size
                self.close_connection = True
                return self._error(400, str(exc) if isinstance(exc, _BadLength) else "malformed chunked body")
            methods = ROUTES.get(path)
            if methods is None:
                return self._error(404, f"no route for {path}")
            if self.command not in methods:
                return self._error(405, f"{self.command} is not allowed on {path}",
                                   {"Allow": ", ".join(methods)})
            methods[self.command](self, raw)
        except (_Abort, *_DISCONNECTS):
            self.close_connection = True
        except Exception as exc:  # a bug: say so to the client, keep serving
            self.close_connection = True
            if not self.server.sandbox.quiet:
                traceback.print_exc()
            if self.status_sent is None:
                self._error(500, f"internal sandbox error: {type(exc).__name__}: {exc}")

    # -- small routes ---------------------------------------------------------
    def _health(self, raw: bytes) -> None:
        self._json(200, {"status": "ok", "model": self.server.sandbox.engine.model})

    def _models(self, raw: bytes) -> None:
        if self._check_auth():
            model = self.server.sandbox.engine.model
            self._json(200, {"object": "list", "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "nb_model"}]})

    def _stats(self, raw: bytes) -> None:
        self._json(200, self.server.sandbox.stats())

    def _reset(self, raw: bytes) -> None:
        self.server.sandbox.reset()
        self._json(200, {"reset": True})

    def _faults(self, raw: bytes) -> None:
        queue = self.server.sandbox.faults
        if self.command == "DELETE":
            return self._json(200, {"cleared": queue.clear()})
        if self.command == "POST":
            try:
                body = json.loads(raw or b"null")
                if not isinstance(body, dict) or "fault" not in body:
                    raise ValueError('expected {"fault": "<spec>", "times": N}')
                queue.push(body["fault"], body.get("times", 1), body.get("seconds"))
            except ValueError as exc:  # JSONDecodeError included
                return self._error(400, str(exc).splitlines()[0])
        self._json(200, {"pending": queue.pending()})

    def _check_auth(self) -> bool:
        if self.server.sandbox._authorized(self.headers.get("Authorization")):
            return True
        self._error(401, "invalid or missing API key")
        return False

    # -- generation -------------------------------------------------------------
    def _generate(self, wire, raw: bytes) -> None:
        sandbox = self.server.sandbox
        if not self._check_auth():
            return
        wait = sandbox._bucket.take() if sandbox._bucket else 0
        if wait:
            return self._error(429, f"rate limit exceeded: {sandbox.qps:g} requests per second",
                               {"Retry-After": str(max(1, math.ceil(wait)))})
        try:
            body = json.loads(raw)
            job = wire.job(body, self.headers, sandbox.max_tokens_cap)
            languages = getattr(sandbox.engine, "languages", None)
            if job.language is not None and languages and language_code(job.language) not in languages:
                raise BadRequest(f"unsupported language {job.language!r}: use one of {', '.join(languages)}")
            prompt_tokens = sandbox.engine.count_tokens(job.prompt)
            if prompt_tokens + job.max_tokens > sandbox.context_window:
                raise BadRequest(f"prompt ({prompt_tokens} tokens) + max_tokens ({job.max_tokens}) "
                                 f"exceeds the context window of {sandbox.context_window} tokens")
            rate = self._rate()
            header = self.headers.get("X-Sandbox-Fault")
            fault = parse_fault(header) if header else sandbox.faults.pop() or NO_FAULT
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "request body is not valid JSON")
        except ValueError as exc:  # BadRequest, bad fault spec, bad rate
            return self._error(400, str(exc))
        if self._early_fault(fault, job.stream):
            return
        reply = Reply(id=wire.id_prefix + self.request_id[len("req_"):],  # the asked model's name, as vLLM does
                      created=int(time.time()), model=job.model or sandbox.engine.model)
        turn = tool_use.turn_for(isinstance(wire, ChatWire), body, job.prompt, fault.kind)  # see tools.py
        if turn is not None and turn.calls:
            return self._tool_calls(wire, job, reply, turn, prompt_tokens)
        params = job.params()
        if job.schema is not None and getattr(sandbox.engine, "structured", False):
            params["schema"] = job.schema
        if turn:
            source = TokenStream(tool_use.pieces(turn.text))
        else:  # a packed prompt (see packing.py), else the engine's own answer
            source = (packed_answer(sandbox.engine, job.prompt, job.params(), fault.kind)
                      or sandbox.engine.generate(job.prompt, **params))
        if fault.kind in SCHEMA_FAULTS:  # broken JSON: see schema.py
            source = TokenStream(_corrupted(source, fault.kind))
        tokens = TokenStream(self._shaped(source, fault, rate))
        send = self._stream if job.stream else self._whole
        try:
            send(wire, job, reply, tokens, fault, lambda n: wire.usage(prompt_tokens, n))
        finally:
            tokens.close()  # stops the engine if the client left or a fault cut the reply

    def _tool_calls(self, wire, job, reply: Reply, turn, prompt_tokens: int) -> None:
        """A chat reply that calls tools (see tools.py), whole or streamed."""
        count = len(list(tool_use.call_deltas(tool_use.call_objects(turn, self.request_id))))
        reply.usage = wire.usage(prompt_tokens, count)
        if not job.stream:
            self._json(200, tool_use.chat_body(wire, reply, turn, self.request_id))
        else:
            self._headers(200, wire.content_type, None)
            out = _ChunkedWriter(self.wfile)
            for event in tool_use.chat_frames(wire, reply, turn, self.request_id, job.include_usage):
                out.write(event)
            out.close()
        self.tokens_sent, self.completed = count, True

    def _rate(self) -> float:
        value = self.headers.get("X-Sandbox-Rate")
        if value is None:
            return self.server.sandbox.token_rate
        try:
            rate = float(value)
        except ValueError:
            rate = -1
        if not 0 <= rate < math.inf:
            raise ValueError("X-Sandbox-Rate must be a number of tokens per second")
        return rate

    def _early_fault(self, fault: Fault, stream: bool) -> bool:
        """Apply a fault that strikes before any text; True if the reply is done."""
        kind = fault.kind
        if kind == "stall-before":
            self._stall(fault.arg)
            return False
        if kind == "status":
            extra = {"Retry-After": "1"} if fault.status == 429 else None
            self._error(fault.status, _FAULT_MESSAGES.get(fault.status, f"simulated error {fault.status}"),
                        extra)
        elif kind == "429-no-retry-after":
            self._error(429, "simulated rate limit")
        elif kind == "429-ms":
            self._error(429, "simulated rate limit", {"retry-after-ms": "200"})
        elif kind == "html":
            self._send(502, "text/html", _HTML_502)
        elif kind == "error-event" and not stream:
            self._error(500, "simulated mid-stream error")
        else:
            return False
        return True

    def _shaped(self, tokens: TokenStream, fault: Fault, rate: float) -> Generator[str, None, str]:
        """The engine's pieces paced at `rate`, with the `stall` and `filter` faults applied."""
        start = time.monotonic()
        try:
            for n, piece in enumerate(tokens):
                if fault.kind == "filter" and n == FILTER_AFTER:
                    return "content_filter"
                if rate > 0:
                    self.server.sandbox._sleep(start + n / rate - time.monotonic())
                yield piece
                if n == 0 and fault.kind == "stall":
                    self._stall(fault.arg)
            return tokens.finish_reason or "stop"
        finally:
            tokens.close()

    def _whole(self, wire, job, reply: Reply, tokens: TokenStream, fault: Fault,
               usage: Callable[[int], dict]) -> None:
        pieces = list(tokens)
        reply.usage = usage(len(pieces))
        body = dumps(wire.body(reply, "".join(pieces), tokens.finish_reason))
        if fault.kind in ("cut-before", "cut-after"):
            self._headers(200, "application/json", len(body))
            raise _Abort()
        if fault.kind == "malformed":
            body = body[: max(1, len(body) // 2)]
        self._send(200, "application/json", body)
        self.tokens_sent, self.completed = len(pieces), fault.kind != "malformed"

    def _stream(self, wire, job, reply: Reply, tokens: TokenStream, fault: Fault,
                usage: Callable[[int], dict]) -> None:
        self._headers(200, wire.content_type, None)
        if fault.kind == "cut-before":
            raise _Abort()
        out = _ChunkedWriter(self.wfile)
        out.write(wire.start(reply))
        cut_at = int(fault.arg) if fault.kind == "cut-after" else None
        for piece in _until(tokens, cut_at):
            out.write(wire.piece(reply, piece))
            self.tokens_sent += 1
            if self.tokens_sent == MIDSTREAM and fault.kind == "malformed":
                out.write(wire.garbage())
            if self.tokens_sent == MIDSTREAM and fault.kind == "error-event":
                out.write(wire.error_event("simulated mid-stream error"))
                return out.close()
        if cut_at is not None:
            raise _Abort()
        reply.usage = usage(self.tokens_sent)
        out.write(wire.end(reply, tokens.finish_reason, job.include_usage))
        out.close()
        self.completed = True


def _corrupted(tokens: TokenStream, kind: str) -> Generator[str, None, str]:
    """The engine's whole text damaged by the fault `kind`, in pieces."""
    try:
        text = "".join(tokens)
    finally:
        tokens.close()
    yield from pieces(corrupt(text, kind))
    return tokens.finish_reason or "stop"


def _until(pieces: Iterator[str], limit: int | None) -> Iterator[str]:
    """The first `limit` pieces (all if None)."""
    for n, piece in enumerate(pieces):
        if limit is not None and n >= limit:
            return
        yield piece


def _generation(wire) -> Callable[[_Handler, bytes], None]:
    """A route serving `wire`; every request it sees is counted in the stats."""
    def route(handler: _Handler, raw: bytes) -> None:
        handler.tokens_sent, handler.completed = 0, False
        epoch = handler.server.sandbox._arrived()
        try:
            minimal = handler.server.sandbox.wire == "minimal" and isinstance(wire, SeedWire)
            handler._generate(MINIMAL_SEED if minimal else wire, raw)
        finally:
            handler.server.sandbox._record(epoch, handler.status_sent, handler.tokens_sent, handler.completed)
    return route


ROUTES: dict[str, dict[str, Callable[[_Handler, bytes], None]]] = {
    "/v1/generate": {"POST": _generation(SeedWire())},
    "/v1/chat/completions": {"POST": _generation(ChatWire())},
    "/v1/completions": {"POST": _generation(CompletionWire())},
    "/v1/models": {"GET": _Handler._models},
    "/health": {"GET": _Handler._health},
    "/sandbox/stats": {"GET": _Handler._stats},
    "/sandbox/reset": {"POST": _Handler._reset},
    "/sandbox/faults": {"GET": _Handler._faults, "POST": _Handler._faults, "DELETE": _Handler._faults},
}
