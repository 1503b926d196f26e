"""Retries and back-off: server hints, timeouts, error objects, what is retried and what is not."""

from __future__ import annotations

import threading
import time

import pytest
from nb_model.client import Client, backoff_delay
from nb_model.config import resolve_profile
from nb_model.errors import APIError, ConnectionFailed

from conftest import run
from helpers.client import client
from helpers.seed_server import SeedServer


def test_read_timeout_before_text_is_retried_then_reported(sandbox):
    c = client(sandbox, read_timeout=0.3, max_retries=1)
    sandbox.inject("stall-before:1", times=2)
    t = time.perf_counter()
    with pytest.raises(ConnectionFailed, match="read timeout"):
        c.generate("hi", max_tokens=5)
    assert time.perf_counter() - t < 3
    assert sandbox.wait_idle()["requests"] == 2  # once the stalled handlers have finished


def test_backoff_honours_server_hints():
    assert backoff_delay(0, {"Retry-After": "3"}) == 3
    assert backoff_delay(0, {"retry-after-ms": "200"}) == pytest.approx(0.2)
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3 <= backoff_delay(0, {"Retry-After": date}) <= 5.5
    assert 0.375 <= backoff_delay(0) <= 0.5 and 6 <= backoff_delay(10) <= 8
    for unreadable in ("soon", "Mon, 99 Foo 2024 25:61:00 GMT", "Fri, 31 Dec 99999 23:59:59 GMT", ""):
        assert 0.375 <= backoff_delay(0, {"Retry-After": unreadable}) <= 0.5  # the default backoff


def test_unreadable_retry_after_is_retried_with_backoff(scripted_server):
    scripted_server.replies = [(429, {"Retry-After": "soon"}, b'{"error": "slow down"}'),
                               (200, {}, b'{"output": "fine now", "finish_reason": "stop"}')]
    prof = resolve_profile("sandbox", endpoint=scripted_server.url, max_retries=1)
    assert Client(prof).generate("hi").text == "fine now"
    assert scripted_server.requests == 2


@pytest.mark.parametrize("protocol, line", [
    ("seed", b'{"error": {"message": "model overloaded"}}\n'),
    ("openai", b'data: {"error": {"message": "model overloaded", "code": 400}}\n\n'),
])
def test_error_object_before_text_is_the_servers_message_not_retried(scripted_server, protocol, line):
    scripted_server.replies = [(200, {"Content-Type": "text/event-stream"}, line)]
    c = Client(resolve_profile("sandbox", endpoint=scripted_server.url, protocol=protocol, max_retries=2))
    with pytest.raises(APIError) as info:
        c.stream("hi").text()
    assert type(info.value) is APIError and "model overloaded" in str(info.value)
    assert "server is running" not in str(info.value) and "attempts" not in str(info.value)
    assert scripted_server.requests == 1
    scripted_server.replies = [(200, {}, b'{"error": "model overloaded"}')]  # the same in a whole reply
    with pytest.raises(APIError, match="model overloaded"):
        c.generate("hi")
    assert scripted_server.requests == 2


def test_error_object_with_a_retryable_status_is_retried(scripted_server):
    scripted_server.replies = [(200, {}, b'{"error": {"message": "busy, try again", "code": 503}}\n'),
                               (200, {}, b'{"text": "fine now"}\n{"text": "", "finish_reason": "stop"}\n')]
    c = Client(resolve_profile("sandbox", endpoint=scripted_server.url, max_retries=1))
    retries = []
    assert c.stream("hi", on_retry=retries.append).text() == "fine now"
    assert scripted_server.requests == 2 and "busy, try again" in retries[0]


def test_retry_after_an_hour_is_one_error_line_at_once(shell, use_endpoint):
    from nb_model.client import Client
    from nb_model.config import resolve_profile
    server = SeedServer(status=429, headers={"Retry-After": "3600"})
    try:
        use_endpoint(server)
        outcome = []

        def call():  # in a thread, so a client that obeys the hour fails this test at once, not by timeout
            try:
                Client(resolve_profile(None)).generate("Tell me about tides", max_tokens=5)
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(5)
        assert outcome, "the client is still waiting on Retry-After: 3600"
        assert "asks to wait 3600 s" in str(outcome[0]) and "\n" not in str(outcome[0])
        server.bodies.clear()
        t = time.monotonic()
        res, cap = run(shell, "%%generate\nTell me about tides")
        took = time.monotonic() - t
    finally:
        server.close()
    assert not res.success and took < 5, took
    message = str(res.error_in_exec)
    assert type(res.error_in_exec).__name__ == "APIError" and "\n" not in message
    assert "asks to wait 3600 s" in message and len(server.bodies) == 1, message
