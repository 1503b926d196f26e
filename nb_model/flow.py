"""How many requests a batch keeps in flight, and how its workers wait out failures together.

`Window`: Little's law. At a rate limit of `qps` requests/s and answers taking `L`
seconds, `qps × L` requests must be in flight to use the whole rate. `L` is the
larger of a moving average of the latencies observed (from the moment a request
left the rate limiter to its answer) and the age of the oldest request still on
the wire — so the window opens as soon as answers are slow to come, without
waiting for the first one. A little slack keeps the limiter's queue non-empty.
More in flight never means more requests per second: every request still passes
the profile's rate limiter, so the window cannot cause a 429 by itself; it only
makes sure the limiter is never idle for want of a request.

`Gate`: one backoff for the whole batch. When any request meets a retryable
failure (429, 5xx, connection refused), every worker pauses until the server's
hint (Retry-After) or an exponential delay, not just the one that saw it; a
success ends the outage. An item gives up only when the batch has seen nothing but
failures for `budget` seconds (the outage budget), not after a fixed count of retries.
"""
from __future__ import annotations

import math
import os
import random
import threading
import time

from .errors import ConfigError

MAX_IN_FLIGHT = 64       # default cap of requests in flight (NB_MODEL_MAX_IN_FLIGHT overrides)
START_LATENCY_S = 0.25   # the latency assumed before any answer came back
OUTAGE_BUDGET_S = 60.0   # default: items give up after this much continuous failure
MAX_PAUSE_S = 4.0        # a pause without a server hint grows up to this (so an outage's end is seen soon)


def default_cap() -> int:
    """The in-flight cap: NB_MODEL_MAX_IN_FLIGHT if set, else MAX_IN_FLIGHT."""
    raw = os.environ.get("NB_MODEL_MAX_IN_FLIGHT")
    if not raw:
        return MAX_IN_FLIGHT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"NB_MODEL_MAX_IN_FLIGHT must be a positive integer, got {raw!r}")
    return value


class Window:
    """The number of requests to keep in flight: ≈ qps × latency + slack, within [1, cap]."""

    def __init__(self, qps: float, cap: int) -> None:
        self.qps, self.cap = float(qps), cap
        self.latency = START_LATENCY_S
        self._sent: dict[int, float] = {}  # request id -> when it left the rate limiter
        self._lock = threading.Lock()
        self.peak = 0  # most requests on the wire at once (for tests and reports)

    def sent(self, rid: int) -> None:
        with self._lock:
            self._sent[rid] = time.monotonic()
            self.peak = max(self.peak, len(self._sent))

    def done(self, rid: int) -> None:
        with self._lock:
            start = self._sent.pop(rid, None)
            if start is not None:
                self.latency += 0.3 * (time.monotonic() - start - self.latency)

    def target(self) -> int:
        if self.qps <= 0:
            return self.cap
        with self._lock:
            oldest = min(self._sent.values(), default=None)
            age = time.monotonic() - oldest if oldest is not None else 0.0
            latency = max(self.latency, age)
        slack = max(2.0, 0.25 * self.qps)
        return max(1, min(self.cap, math.ceil(self.qps * latency + slack)))


class Gate:
    """The batch's shared backoff and outage budget (see the module docstring)."""

    def __init__(self, budget: float = OUTAGE_BUDGET_S) -> None:
        self.budget = budget
        self.pause_until = 0.0
        self.outage_since: float | None = None
        self.level = 0
        self.pauses = 0  # how many shared pauses began (for tests and reports)
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        """Block while the batch is paused (returns early when `stop` is set)."""
        while not stop.is_set():
            left = self.pause_until - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(left, 0.1))

    def success(self) -> None:
        with self._lock:
            self.outage_since, self.level = None, 0

    def failure(self, hint: float | None) -> float:
        """Record a retryable failure; every worker pauses for the hint (else a growing delay).
        Returns the pause."""
        now = time.monotonic()
        with self._lock:
            if self.outage_since is None:
                self.outage_since = now
            if now >= self.pause_until:  # a request sent after the last pause failed too: pause longer
                delay = hint if hint is not None else min(0.25 * 2 ** self.level, MAX_PAUSE_S) * (
                    1 - 0.25 * random.random())
                self.level += 1
                self.pauses += 1
                self.pause_until = now + delay
            elif hint is not None:
                self.pause_until = max(self.pause_until, now + hint)
            return self.pause_until - now

    def exhausted(self) -> bool:
        """True once the batch has seen only failures for longer than the budget."""
        with self._lock:
            return self.outage_since is not None and time.monotonic() - self.outage_since >= self.budget
