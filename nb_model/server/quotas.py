"""Per-user limits of the relay: requests per second and tokens per UTC day.

Counts live in SQLite (one file, survives restarts) or Redis (shared by
several servers). The request rate uses GCRA (`nb_model.rate`, "admit or refuse") — one "theoretical
arrival time" per user, stored as wall-clock seconds — so it also survives restarts.
A request reserves its most possible tokens (prompt estimate + max_tokens) when
admitted, atomically with the check, so concurrent or large requests cannot run
far past the daily limit; `settle` then replaces the reservation by the real count.
"""
from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..rate import GCRA_LUA, gcra

KEY_PREFIX = "nb_model:relay:"


class QuotaExceeded(Exception):
    """Over a limit: `retry_after` seconds until the next request may pass."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reservation:
    """Tokens counted for `user` on `day` when a request was admitted, until `Quotas.settle`."""

    user: str
    day: str
    tokens: int = 0


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float) -> float:
    moment = datetime.fromtimestamp(now, timezone.utc)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


def open_sqlite(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` (its folder made if needed) that several threads may share
    under a lock, in autocommit mode (transactions are explicit), waiting up to 10 s for other writers."""
    if path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)


class SQLiteCounters:
    """Counters in one SQLite file; safe for several threads and processes."""

    def __init__(self, path: str):
        self.path = path
        self._db = open_sqlite(path)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS rate (user TEXT PRIMARY KEY, tat REAL NOT NULL);"
                "CREATE TABLE IF NOT EXISTS usage (user TEXT NOT NULL, day TEXT NOT NULL, "
                "tokens INTEGER NOT NULL, PRIMARY KEY (user, day));")

    def take(self, user: str, interval: float, burst: float, now: float) -> float:
        """GCRA: 0 if a request may pass now (and count it), else the seconds to wait."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT tat FROM rate WHERE user = ?", (user,)).fetchone()
                tat, wait = gcra(row[0] if row else None, now, interval, burst)
                if wait > 0:
                    return wait
                self._db.execute("INSERT OR REPLACE INTO rate (user, tat) VALUES (?, ?)", (user, tat))
                return 0.0
            finally:
                self._db.execute("COMMIT")

    def used(self, user: str, day: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT tokens FROM usage WHERE user = ? AND day = ?", (user, day)).fetchone()
        return int(row[0]) if row else 0

    def reserve(self, user: str, day: str, tokens: int, limit: int) -> tuple[bool, int]:
        """(True, used) after adding `tokens` if used < limit and used + tokens <= limit, else (False, used)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT tokens FROM usage WHERE user = ? AND day = ?", (user, day)).fetchone()
                used = int(row[0]) if row else 0
                if used >= limit or used + tokens > limit:
                    return False, used
                if tokens > 0:
                    self._db.execute("INSERT INTO usage (user, day, tokens) VALUES (?, ?, ?) ON CONFLICT (user, day) "
                                     "DO UPDATE SET tokens = tokens + excluded.tokens", (user, day, tokens))
                return True, used
            finally:
                self._db.execute("COMMIT")

    def add(self, user: str, day: str, tokens: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO usage (user, day, tokens) VALUES (?, ?, ?) "
                             "ON CONFLICT (user, day) DO UPDATE SET tokens = tokens + excluded.tokens",
                             (user, day, tokens))

    def close(self) -> None:
        with self._lock:
            self._db.close()


# GCRA, "admit or refuse", on the caller's clock (`now`, as the SQLite counters use it)
_GCRA = GCRA_LUA + """
local now = tonumber(ARGV[1])
local tat, wait = gcra(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then return string.format('%.6f', wait) end
book(KEYS[1], tat, now)
return '0'
"""


_RESERVE = """
local used, tokens, limit = tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]), tonumber(ARGV[2])
if used >= limit or used + tokens > limit then return {0, used} end
if tokens > 0 then
  redis.call('INCRBY', KEYS[1], tokens)
  redis.call('EXPIRE', KEYS[1], 172800)
end
return {1, used}
"""


class RedisCounters:
    """The same counters in Redis, under ``nb_model:relay:`` keys (atomic via a Lua script)."""

    def __init__(self, url: str):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._gcra = self._redis.register_script(_GCRA)
        self._reserve = self._redis.register_script(_RESERVE)

    def take(self, user: str, interval: float, burst: float, now: float) -> float:
        return float(self._gcra(keys=[f"{KEY_PREFIX}rate:{user}"], args=[repr(now), repr(interval), repr(burst)]))

    def used(self, user: str, day: str) -> int:
        return int(self._redis.get(f"{KEY_PREFIX}tokens:{user}:{day}") or 0)

    def reserve(self, user: str, day: str, tokens: int, limit: int) -> tuple[bool, int]:
        ok, used = self._reserve(keys=[f"{KEY_PREFIX}tokens:{user}:{day}"], args=[tokens, limit])
        return bool(ok), int(used)

    def add(self, user: str, day: str, tokens: int) -> None:
        key = f"{KEY_PREFIX}tokens:{user}:{day}"
        pipe = self._redis.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, 2 * 86400)
        pipe.execute()

    def close(self) -> None:
        self._redis.close()


class Quotas:
    """The relay's policy over a counter store: `admit()` before a request, `record()` after."""

    def __init__(self, store, qps: float, tokens_per_day: int):
        self.store, self.qps, self.tokens_per_day = store, qps, tokens_per_day

    def admit(self, user: str, now: float | None = None, reserve: int = 0) -> Reservation:
        """Raise `QuotaExceeded` if `user` is over a limit (or would be, with `reserve` more tokens);
        else count the request and reserve the tokens (give the result to `settle` when it is done)."""
        now = time.time() if now is None else now
        day, limit = utc_day(now), self.tokens_per_day
        if self.qps > 0:  # the rate first, so a refused request never holds tokens others could see
            wait = self.store.take(user, 1.0 / self.qps, max(1.0, self.qps), now)
            if wait > 0:
                raise QuotaExceeded(
                    f"rate limit: user {user!r} may send {self.qps:g} requests per second; "
                    f"retry in {max(wait, 0.001):.2f} s", wait)
        held = 0
        if limit > 0:
            ok, used = self.store.reserve(user, day, max(reserve, 0), limit)
            if not ok:
                wait = seconds_to_midnight(now)
                if used >= limit:
                    raise QuotaExceeded(f"daily token limit reached: user {user!r} used {used} of {limit} tokens "
                                        f"today (UTC); it resets in {wait / 3600:.1f} h", wait)
                raise QuotaExceeded(f"daily token limit: user {user!r} used {used} of {limit} tokens today (UTC) "
                                    f"and this request may take {reserve} more (prompt + max_tokens): lower "
                                    f"max_tokens, or wait for the reset in {wait / 3600:.1f} h", wait)
            held = max(reserve, 0)
        return Reservation(user, day, held)

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """Replace the tokens reserved by `admit` with the `tokens` the request really used."""
        if tokens - reservation.tokens:
            self.store.add(reservation.user, reservation.day, tokens - reservation.tokens)

    def record(self, user: str, tokens: int, now: float | None = None) -> None:
        if tokens > 0:
            self.store.add(user, utc_day(time.time() if now is None else now), tokens)

    def used_today(self, user: str, now: float | None = None) -> int:
        return self.store.used(user, utc_day(time.time() if now is None else now))


def open_store(quota_db: str, redis_url: str = ""):
    """Redis counters when a URL is given, else the SQLite file."""
    return RedisCounters(redis_url) if redis_url else SQLiteCounters(quota_db)


def retry_after_header(seconds: float) -> dict[str, str]:
    """Retry-After (whole seconds, at least 1) and retry-after-ms (precise)."""
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}
