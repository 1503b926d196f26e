"""Fixtures and helpers shared by several test files."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from .loopback import Loopback


class SeedServer(Loopback):
    """The documented seed API in a few lines: `POST /v1/generate` -> {"output": ...}; records raw bodies.
    `status`/`headers` make every reply an error instead (e.g. 429 with Retry-After)."""

    def __init__(self, status: int = 200, headers: dict | None = None):
        self.bodies: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.bodies.append(raw)
                if status == 200:
                    out = json.dumps({"output": "Tides follow the moon."}).encode()
                else:
                    out = json.dumps({"error": {"message": "slow down"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.serve(Handler)



@pytest.fixture
def seed_server():
    server = SeedServer()
    yield server
    server.close()


@pytest.fixture
def cache_on(monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")
