"""The serving part of the minimal servers the tests write from the API docs: a request handler class on a free
loopback port, answered from a daemon thread."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class Loopback:
    """Base of a test's own server: `self.serve(Handler)` starts it at `self.url`; `stop()` ends it."""

    def serve(self, handler, path: str = "") -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    close = stop
