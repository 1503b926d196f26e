"""Client-side rate limiting: a token bucket per profile, shared by all threads."""
from __future__ import annotations

import threading
import time


class TokenBucket:
    """`acquire()` blocks until a request may go out at `rate` per second.

    A small burst keeps a thread pool from sending more than the server's
    bucket allows; waiting happens outside the lock in short sleeps so a
    KeyboardInterrupt stops a waiting caller promptly.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token now or book one; return how long the caller must wait."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        if self.rate <= 0:
            return 0.0
        wait = self._reserve()
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
        return wait


_buckets: dict[tuple[str, float], TokenBucket] = {}
_buckets_lock = threading.Lock()


def bucket_for(profile_name: str, qps: float) -> TokenBucket:
    """The process-wide bucket of a profile (one per name and rate)."""
    key = (profile_name, float(qps))
    with _buckets_lock:
        if key not in _buckets:
            _buckets[key] = TokenBucket(qps, burst=min(qps, 2.0) if qps else 1.0)
        return _buckets[key]
