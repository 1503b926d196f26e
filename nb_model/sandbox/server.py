"""`SandboxServer`: a real threaded HTTP server on loopback around an `Engine`.

Routes (``/v1/*`` need ``Authorization: Bearer <key>`` when an api_key is set):

* ``POST /v1/generate`` (seed protocol), ``POST /v1/chat/completions`` and
  ``POST /v1/completions`` (OpenAI) — see `wire.py`;
* ``GET /v1/models``, ``GET /health``;
* ``GET /sandbox/stats``, ``POST /sandbox/reset``, ``GET|POST|DELETE
  /sandbox/faults`` — the test controls (see `faults.py`).

Every reply carries ``X-Request-Id`` (except with ``wire="minimal"``: see `minimal.py`). Generation
requests pass, in order: auth (401), the QPS token bucket (429 + Retry-After), validation (400), the fault
injector, then the engine. Replies name the model the request asked for (as
OpenAI-compatible servers such as vLLM do), else the engine's. The context
window is the ``context_window`` argument, else the engine's, else 16384.
Streams use chunked encoding and are flushed piece by piece, paced at
``token_rate`` (or the request's ``X-Sandbox-Rate``).
"""
from __future__ import annotations

import hmac
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from ..rate import gcra
from .engine import Engine, SimulatedEngine
from .faults import FaultQueue
from .handler import _DISCONNECTS, _Abort, _Handler
from .minimal import check_wire

CONTEXT_WINDOW = 16384  # tokens, when neither the caller nor the engine says


class _Bucket:
    """The sandbox's own rate limit: `rate` requests per second, bursts of `rate` (GCRA, "admit or refuse":
    see nb_model.rate), so a request over it gets 429 as from the real API."""

    def __init__(self, rate: float):
        self.rate, self._tat = rate, None
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 if a request may go now (and count it), else the seconds until one may."""
        with self._lock:
            tat, wait = gcra(self._tat, time.monotonic(), 1.0 / self.rate, max(self.rate, 1.0))
            if not wait:
                self._tat = tat
            return wait


class SandboxServer:
    """Simulated text-generation API on a background thread; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 qps: float = 20.0, token_rate: float = 0.0, engine: Engine | None = None,
                 max_tokens_cap: int = 2048, context_window: int | None = None, quiet: bool = True,
                 wire: str = "full"):
        self.host, self.port = host, port
        self.wire = check_wire(wire)  # "minimal": seed replies exactly as documented, nothing more
        self.engine: Engine = engine or SimulatedEngine()
        self.qps, self.token_rate = qps, token_rate
        # the explicit window, else the engine's own (a real model's n_ctx), else 16384
        self.max_tokens_cap = max_tokens_cap
        self.context_window = context_window or getattr(self.engine, "context_window", None) or CONTEXT_WINDOW
        self.quiet = quiet
        self.faults = FaultQueue()
        self._api_key = api_key
        self._bucket = _Bucket(qps) if qps > 0 else None
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._in_flight = self._epoch = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    def __repr__(self) -> str:  # never shows the key
        return f"SandboxServer(url={self.url if self._httpd else None!r}, model={self.engine.model!r})"

    # -- lifecycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "SandboxServer":
        """Bind and serve on a daemon thread; returns self."""
        if self._httpd is None:
            server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
            self._httpd = server_class((self.host, self.port), _Handler)
            self._httpd.sandbox = self
            self.port = self._httpd.server_address[1]
            self._stopping.clear()
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                            name=f"nb_model-sandbox-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; streams in progress are cut."""
        if self._httpd is not None:
            self._stopping.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------
    def inject(self, fault: str, times: int = 1, seconds: float | None = None) -> None:
        """Make the next `times` generation requests suffer `fault`, or every one during the next
        `seconds` (an outage); see `faults.py`."""
        self.faults.push(fault, times, seconds)

    def clear_faults(self) -> int:
        """Drop every queued fault; returns how many requests they would have hit."""
        return self.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Counters of generation requests since start / last reset."""
        with self._lock:
            return {"requests": self._requests, "by_status": dict(self._by_status),
                    "completed": self._completed, "tokens_out": self._tokens_out,
                    "faults_pending": self.faults.pending()}

    def wait_idle(self, timeout: float = 5.0) -> dict[str, Any]:
        """stats() once no generation request is still being handled (a handler records as it ends,
        which can be just after its client has read the reply); gives up after `timeout` seconds."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout)
        return self.stats()

    def reset(self) -> None:
        """Zero the counters, drop queued faults and refill the QPS bucket. Requests that arrived
        before are not counted when they end."""
        with self._lock:
            self._epoch += 1
            self._requests = self._completed = self._tokens_out = 0
            self._by_status: dict[str, int] = {}
        self.faults.clear()
        self._bucket = _Bucket(self.qps) if self.qps > 0 else None

    # -- used by the handler ----------------------------------------------------
    def _arrived(self) -> int:
        """Count a generation request as soon as it arrives (so stats() is current once a reply began);
        returns the counting period it belongs to."""
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            return self._epoch

    def _record(self, epoch: int, status: int | None, tokens: int, completed: bool) -> None:
        key = str(status) if status else "disconnected"
        with self._lock:
            if epoch == self._epoch:
                self._by_status[key] = self._by_status.get(key, 0) + 1
                self._completed += completed
                self._tokens_out += tokens
            self._in_flight -= 1
            self._lock.notify_all()

    def _authorized(self, header: str | None) -> bool:
        if not self._api_key:
            return True
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  self._api_key.encode())

    def _sleep(self, seconds: float) -> None:
        """Sleep, but give up (drop the connection) when the server stops."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Abort()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of connections (1 s SYN retry)
    sandbox: SandboxServer

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], _DISCONNECTS) and not self.sandbox.quiet:
            super().handle_error(request, client_address)




class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6
