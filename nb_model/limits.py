"""Client-side rate limiting: a token bucket per profile, shared by all threads.

With `NB_MODEL_LIMIT_URL` (or the shared cache's `NB_MODEL_CACHE_URL`, or the
profile's `cache_url`) set to `redis://...`, the bucket lives in Redis instead, so
every kernel and machine using that server stays under the rate together. Shared
buckets are keyed by the cache namespace, the endpoint and a short hash of the
endpoint and the API key (never the key itself), so profiles of any name calling
the same endpoint with the same key share one limit. `NB_MODEL_LIMIT_URL=local`
keeps the limit per process, as does the embedded sandbox (one per kernel). An
unreachable Redis means one warning and an in-process bucket at the shared rate
divided by the number of processes last seen sharing it (each process books its
slots under its own name in a short-lived Redis set), so the processes that knew
of each other stay under the limit together; Redis is asked again every few
seconds and the shared schedule takes over as soon as it answers.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Callable

from .config import EMBEDDED_PREFIX
from .notices import notice_once, redis_topic
from .rate import GCRA_LUA, gcra

# GCRA (nb_model.rate, "book and wait") in one atomic step on Redis's clock: book the next slot on the
# shared schedule, say how long to wait for it, and how many processes booked slots in the last ARGV[4] s.
# KEYS[1] = schedule key, KEYS[2] = its sharers; ARGV = interval between requests (s), burst (requests),
# this process's name, the sharers' window (s).
_RESERVE_LUA = GCRA_LUA + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat, wait = gcra(KEYS[1], now, tonumber(ARGV[1]), tonumber(ARGV[2]))
book(KEYS[1], tat, now)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4])) + 1)
return {string.format('%.6f', wait), redis.call('ZCARD', KEYS[2])}
"""
SHARERS_WINDOW_S = 10.0  # a process that booked a slot this recently counts as sharing the limit
PROBE_S = 5.0  # while Redis is unreachable, ask it again this often


def wait_interruptibly(seconds: float) -> None:
    """Sleep in short steps so a KeyboardInterrupt stops a waiting caller promptly."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


class TokenBucket:
    """`acquire()` blocks until a request may go out at `rate` per second (GCRA, "book and wait": see
    nb_model.rate).

    A small burst keeps a thread pool from sending more than the server's
    bucket allows; waiting happens outside the lock in short sleeps so a
    KeyboardInterrupt stops a waiting caller promptly.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._tat: float | None = None
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Book the next slot; return how long the caller must wait for it."""
        with self._lock:
            self._tat, wait = gcra(self._tat, time.monotonic(), 1.0 / self.rate, self.burst)
            return wait

    def acquire(self) -> float:
        if self.rate <= 0:
            return 0.0
        wait = self._reserve()
        wait_interruptibly(wait)
        return wait


class RedisBucket:
    """The same contract as `TokenBucket`, the schedule kept in Redis (one Lua call per request).

    redis-py is imported on first use; if it is missing or the server cannot be
    reached, one warning is shown and `fallback` (the process's bucket) takes over.
    """

    def __init__(self, url: str, key: str | Callable[[], str], fallback: TokenBucket) -> None:
        self.url, self.fallback = url, fallback
        self._key = key  # a callable is asked at every request (the API key is read at request time)
        self.rate, self.burst = fallback.rate, fallback.burst
        self._script = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.member = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.sharers = 1  # processes seen booking on the same schedule, at the last answer from Redis
        self.degraded: TokenBucket | None = None  # while Redis is down: this process's share of the rate

    def _reserve(self) -> float:
        with self._lock:
            if self._script is None:
                from .cache.redis_store import redis_client
                self._script = redis_client(self.url).register_script(_RESERVE_LUA)
        key = self.key
        wait, sharers = self._script(keys=[key, key + ":sharers"],
                                     args=[1.0 / self.rate, self.burst, self.member, SHARERS_WINDOW_S])
        self.sharers = max(1, int(sharers))
        return float(wait)

    @property
    def key(self) -> str:
        return self._key() if callable(self._key) else self._key

    def acquire(self) -> float:
        if self.rate <= 0:
            return 0.0
        if time.monotonic() >= self._down_until:
            try:
                wait = self._reserve()
            except Exception as exc:  # noqa: BLE001 - ImportError, connection or server errors alike
                self._fall_back(exc)
            else:
                self.degraded = None  # Redis answers (again): the shared schedule
                wait_interruptibly(wait)
                return wait
        return (self.degraded or self.fallback).acquire()

    def _fall_back(self, exc: Exception) -> None:
        from .cache.redis_store import redact_url
        self._down_until = time.monotonic() + (PROBE_S if not isinstance(exc, ImportError) else float("inf"))
        share = self.rate / self.sharers
        if self.sharers > 1 and (self.degraded is None or self.degraded.rate != share):
            self.degraded = TokenBucket(share, burst=1.0)
        reason = "redis-py is not installed: pip install 'nb_model[redis]'" if isinstance(exc, ImportError) \
            else type(exc).__name__
        alone = f"{share:g} requests/s ({self.sharers} processes were sharing {self.rate:g}/s)" \
            if self.sharers > 1 else f"{self.rate:g} requests/s"
        notice_once(redis_topic(self.url), f"nb_model: the shared rate limit at {redact_url(self.url)} is "
                    f"unavailable ({reason}); limiting this process alone to {alone}")


def shared_limit_url(profile_url: str | None = None) -> str | None:
    """The Redis URL of the shared limiter (NB_MODEL_LIMIT_URL, else NB_MODEL_CACHE_URL, else the
    profile's cache_url), or None for the in-process one."""
    url = os.environ.get("NB_MODEL_LIMIT_URL") or os.environ.get("NB_MODEL_CACHE_URL") or profile_url or ""
    return url if url.split(":", 1)[0].lower() in ("redis", "rediss", "unix") else None


def limit_key(namespace: str, endpoint: str, api_key: str | None) -> str:
    """The Redis key of the limit for an endpoint and API key: the endpoint without credentials, and a
    truncated sha256 of the endpoint and the key (the key itself never appears)."""
    from .config import redact_url
    digest = hashlib.sha256(f"{endpoint}\n{api_key or ''}".encode()).hexdigest()[:16]
    return f"nb_model.limit:{namespace}:{redact_url(endpoint)}:{digest}"


_buckets: dict[tuple, TokenBucket | RedisBucket] = {}
_buckets_lock = threading.Lock()


def bucket_for(profile) -> TokenBucket | RedisBucket:
    """The process-wide bucket of a profile: in this process one per name and rate; in Redis, when one
    is configured and the endpoint is a real server, one per endpoint and key (the embedded sandbox
    belongs to this kernel alone)."""
    name, qps, endpoint = profile.name, float(profile.qps), profile.endpoint
    url = shared_limit_url(profile.cache_url) if endpoint and not endpoint.startswith(EMBEDDED_PREFIX) else None
    with _buckets_lock:
        local = _buckets.setdefault((name, qps, None), TokenBucket(qps, burst=min(qps, 2.0) if qps else 1.0))
        if url is None:
            return local
        key = (name, qps, url, endpoint, profile.key_envs())
        if key not in _buckets:
            from .cache.redis_store import parse_cache_url
            redis_url, namespace = parse_cache_url(url)[:2]
            _buckets[key] = RedisBucket(redis_url, lambda: limit_key(namespace, endpoint, profile.api_key()), local)
        return _buckets[key]
