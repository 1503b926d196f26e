"""Fixtures and helpers shared by several test files."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


# -- a minimal seed server from the docs: POST /v1/generate -> {"output": ...}; 503 + Retry-After when down --
class DocsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, down_for: float = 0.0, retry_after: str | None = None, answer=None):
        super().__init__(("127.0.0.1", 0), _DocsHandler)
        self.down_until = time.monotonic() + down_for
        self.retry_after, self.answer = retry_after, answer or (lambda prompt: f"answer to {prompt}")
        self.arrivals: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DocsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.monotonic()
        status = 503 if now < self.server.down_until else 200
        with self.server.lock:
            self.server.arrivals.append((now, status))
        if status == 503:
            data = json.dumps({"error": {"message": "service unavailable"}}).encode()
            self.send_response(503)
            if self.server.retry_after:
                self.send_header("Retry-After", self.server.retry_after)
        else:
            data = json.dumps({"output": self.server.answer(body["prompt"])}, ensure_ascii=False).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def docs_server(monkeypatch):
    servers = []

    def make(**kw):
        server = DocsServer(**kw)
        servers.append(server)
        monkeypatch.setenv("NB_MODEL_ENDPOINT", server.url)
        monkeypatch.setenv("NB_MODEL_PROTOCOL", "seed")
        from nb_model import client
        client._clients.clear()
        return server
    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
