"""Batch flow control: the in-flight window, outages, the server's pause hints."""

import threading
import time

import pytest
from nb_model.batch import generate_many, last_run
from nb_model.sandbox import SandboxServer

from helpers.docs_server import docs_server  # noqa: F401 (fixtures)


OK = ("stop", "length")


def answered(got) -> int:
    return sum(g is not None and g.finish_reason in OK for g in got)


# -- the in-flight window --------------------------------------------------------------------------
def test_in_flight_rises_with_latency_and_stays_within_the_rate(use_endpoint):
    peaks, rates = {}, {}
    for latency in (0.05, 1.0):
        with SandboxServer(port=0, qps=20, token_rate=10 / latency) as server:  # 10 tokens per answer
            use_endpoint(server)
            t = time.perf_counter()
            got = generate_many([f"lat {latency} prompt {i}" for i in range(60)], cache="off", progress=False,
                                max_tokens=10)
            elapsed = time.perf_counter() - t
            stats = server.wait_idle()
            assert answered(got) == 60 and stats["by_status"] == {"200": 60}  # no 429 reaches the server
            peaks[latency], rates[latency] = last_run["peak_in_flight"], 60 / elapsed
            assert elapsed >= (60 - 2) / 20  # paced at the rate: never faster than 20/s (burst of 2)
    assert peaks[0.05] <= 8 and peaks[1.0] >= 15, peaks  # ≈ 20/s × latency
    assert rates[1.0] >= 0.75 * 20, rates  # 4 workers would give 4/s at 1 s per answer


def test_explicit_max_workers_caps_the_window(use_endpoint):
    with SandboxServer(port=0, qps=20, token_rate=10) as server:  # 1 s per answer
        use_endpoint(server)
        got = generate_many([f"capped {i}" for i in range(12)], max_workers=3, cache="off", progress=False,
                            max_tokens=10)
        assert answered(got) == 12 and last_run["peak_in_flight"] <= 3


# -- one backoff for all workers, and the outage budget ------------------------------------------------
def test_ten_second_outage_loses_nothing(use_endpoint):
    with SandboxServer(port=0, qps=20, token_rate=100) as server:
        use_endpoint(server)
        threading.Timer(0.8, lambda: server.inject("503", seconds=10)).start()
        t = time.perf_counter()
        got = generate_many([f"outage prompt {i}" for i in range(100)], cache="off", progress=False,
                            max_tokens=10)
        elapsed = time.perf_counter() - t
        stats = server.wait_idle()
        assert answered(got) == 100 and not [g for g in got if g.error]
        assert stats["by_status"]["200"] == 100 and stats["by_status"].get("503", 0) > 0
        assert 10 < elapsed < 20  # waited the outage out, then went on at the rate
        assert stats["by_status"]["503"] < 150  # paused together: a few probes per pause, not a storm


def test_workers_pause_together_on_the_servers_hint(docs_server):
    server = docs_server(down_for=0.3, retry_after="2")
    got = generate_many([f"hinted {i}" for i in range(30)], cache="off", progress=False, max_tokens=5)
    assert answered(got) == 30
    first_503 = min(t for t, s in server.arrivals if s == 503)
    quiet = [t for t, s in server.arrivals if first_503 + 0.4 < t < first_503 + 1.9]
    assert quiet == []  # every worker honoured the one Retry-After: 2, not only the one that got it
    assert all(g.text.startswith("answer to hinted") for g in got)


def test_items_give_up_after_the_outage_budget(use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        server.inject("503", seconds=30)
        t = time.perf_counter()
        got = generate_many([f"doomed {i}" for i in range(6)], cache="off", progress=False, max_tokens=5,
                            outage_budget=1.5)
        assert time.perf_counter() - t < 8
        assert all(g.finish_reason == "error" and "HTTP 503" in g.error and "attempt" in g.error for g in got)
        assert all("\n" not in g.error for g in got)
        server.clear_faults()


def test_bad_outage_budget_is_one_line(use_endpoint, sandbox):
    from nb_model.errors import ConfigError
    use_endpoint(sandbox)
    with pytest.raises(ConfigError, match="outage_budget must be"):
        generate_many(["x"], outage_budget=-1)
    with pytest.raises(ConfigError, match="max_workers must be"):
        generate_many(["x"], max_workers=0)
