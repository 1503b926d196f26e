"""Fault specs the sandbox injects into generation requests, and their queue.

Specs (per request with header ``X-Sandbox-Fault: <spec>``, or queued with
``POST /sandbox/faults {"fault": spec, "times": n}`` / `SandboxServer.inject`):

=======================  ====================================================
``400`` … ``599``        that status with a JSON error body (``429`` adds
                         ``Retry-After: 1``)
``429-no-retry-after``   429 without any retry hint
``429-ms``               429 with only ``retry-after-ms: 200``
``html``                 502 with an HTML page (``text/html``)
``cut-before``           200 headers, then the socket closes before any text
``cut-after:N``          N tokens streamed, then the socket closes (no final
                         line, no ``[DONE]``); non-streaming: no body
``stall:S``              first token, then S seconds of silence (non-streaming:
                         the reply comes S seconds late)
``stall-before:S``       S seconds before the headers
``malformed``            a garbage line mid-stream (non-streaming: a truncated
                         JSON body)
``filter``               text cut after a few tokens, finish_reason
                         ``content_filter``
``error-event``          an ``{"error": …}`` event mid-stream at HTTP 200
                         (non-streaming: a 500)
``tool-malformed``       a tool call whose arguments are cut mid-JSON (see
                         tools.py; a request without tools is not affected)
``pack-drop``            a packed request's answer lacks one item's section
``pack-merge``           a packed request's answer runs two items together
                         (one section header missing); see `packing.py`
``json-noise``           the answer inside prose and a code fence, with a
                         trailing comma (a tolerant JSON parser repairs it)
``json-invalid``         the answer cut in half (broken JSON: only a retry
                         helps)
=======================  ====================================================

A fault queued with ``seconds`` (``{"fault": "503", "seconds": 10}`` /
``inject("503", seconds=10)``) hits every generation request for that many
seconds from when it is queued: an outage.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

SIMPLE = ("429-no-retry-after", "429-ms", "html", "cut-before", "malformed", "filter", "error-event",
          "tool-malformed", "pack-drop", "pack-merge", "json-noise", "json-invalid")
WITH_ARG = {"cut-after": int, "stall": float, "stall-before": float}
MAX_WAIT_S = 3600  # the longest stall a spec may ask for
KNOWN = "400-599, " + ", ".join(SIMPLE) + f", cut-after:N, stall:S, stall-before:S (S at most {MAX_WAIT_S})"


@dataclass(frozen=True)
class Fault:
    """A parsed spec: `kind` is "status" (with `status`) or the spec's name (with `arg`)."""

    spec: str
    kind: str
    status: int = 0
    arg: float = 0.0


NO_FAULT = Fault(spec="", kind="")


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec; ValueError (one line, listing the known specs) if unknown."""
    text = str(spec).strip().lower()
    name, _, arg = text.partition(":")
    if text.isdigit() and 400 <= int(text) <= 599:
        return Fault(spec=text, kind="status", status=int(text))
    if text in SIMPLE:
        return Fault(spec=text, kind=text)
    if name in WITH_ARG and arg:
        try:
            value = WITH_ARG[name](arg)
        except ValueError:
            value = -1
        if 0 <= value <= MAX_WAIT_S:  # also refuses inf and nan
            return Fault(spec=text, kind=name, arg=float(value))
    raise ValueError(f"unknown fault spec {spec!r} (known: {KNOWN})")


class FaultQueue:
    """Thread-safe FIFO of faults for the next generation requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[list] = deque()  # [Fault, remaining, until]: until > 0 for a time window

    def push(self, spec: str, times: int = 1, seconds: float | None = None) -> Fault:
        """Queue `spec` for the next `times` requests, or for every request during the next `seconds`."""
        fault = parse_fault(spec)
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
                raise ValueError("seconds must be a positive number")
            with self._lock:
                self._entries.append([fault, math.inf, time.monotonic() + seconds])
            return fault
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError("times must be a positive integer")
        with self._lock:
            self._entries.append([fault, times, 0.0])
        return fault

    def pop(self) -> Fault | None:
        with self._lock:
            while self._entries and 0 < self._entries[0][2] <= time.monotonic():
                self._entries.popleft()  # an outage that is over
            if not self._entries:
                return None
            entry = self._entries[0]
            entry[1] -= 1
            if entry[1] == 0:
                self._entries.popleft()
            return entry[0]

    def pending(self) -> list[dict]:
        now = time.monotonic()
        with self._lock:
            return [{"fault": f.spec, "seconds": round(until - now, 3)} if until else {"fault": f.spec, "times": n}
                    for f, n, until in self._entries if not 0 < until <= now]

    def clear(self) -> int:
        with self._lock:
            count = sum(n for _, n, until in self._entries if not until)
            self._entries.clear()
            return count
