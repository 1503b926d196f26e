"""The store the client core talks to: `lookup`, `store` and the history hook `record`.

Entries go to Redis when a cache URL is set (NB_MODEL_CACHE_URL or the profile's
`cache_url`), else to the notebook's SQLite file; history always goes to the
SQLite file (and to this session's memory, which also serves when the file is off).
The location is resolved at every call, so `%generate cache --file` and a changed
notebook path apply to clients that already exist.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from ..notices import forget_said, notice, notice_once
from . import location
from .keys import cache_key, prompt_head
from .redis_store import SCHEMES, RedisStore, redact_url
from .sqlite_store import SQLiteStore, open_sqlite

SESSION_ID = f"{os.getpid()}-{int(time.time())}"

_lock = threading.Lock()
_stores: dict[tuple, object] = {}


def warn(msg: str) -> None:
    notice(msg)


def _warn_once(topic: str, msg: str) -> None:
    notice_once(topic, msg)


def usage_totals(rows=()) -> dict:
    """Calls, cache hits, tokens in/out and cost of fresh calls, and what hits saved."""
    totals = {"calls": 0, "hits": 0, "in": 0, "out": 0, "cost": 0.0, "saved": 0.0, "estimated": False}
    for row in rows:
        tally(totals, row)
    return totals


def tally(totals: dict, row: dict) -> None:
    """Add one history row to usage totals: a hit costs nothing and saves its original cost."""
    cost = row["cost_usd"] or 0.0
    if row["cached"]:
        totals["hits"] += 1
        totals["saved"] += cost
    else:
        totals["calls"] += 1
        totals["in"] += row["prompt_tokens"] or 0
        totals["out"] += row["completion_tokens"] or 0
        totals["estimated"] = totals["estimated"] or bool(row.get("usage_estimated"))
        totals["cost"] += cost


class SessionLog:
    """This kernel session: cache hits/misses, usage totals of every generation and the recent
    history rows (the last KEEP, for `history()` when there is no cache file)."""

    KEEP = 2000

    def __init__(self) -> None:
        self.hits = self.misses = 0
        self.totals = usage_totals()
        self.rows: deque[dict] = deque(maxlen=self.KEEP)
        self._lock = threading.Lock()

    def count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def add(self, row: dict) -> None:
        with self._lock:
            self.rows.append(row)
            tally(self.totals, row)

    def usage(self) -> dict:
        with self._lock:
            return dict(self.totals)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.rows)


session = SessionLog()


def local_store() -> SQLiteStore | None:
    """The SQLite file for the current notebook (None when off or unusable)."""
    path, _ = location.sqlite_path()
    if path is None:
        return None
    key = ("sqlite", str(path))
    with _lock:
        if key not in _stores:
            _stores[key] = open_sqlite(path, warn)
        return _stores[key]


def shared_store(url: str) -> RedisStore | None:
    """The Redis store for a cache URL (None, after one warning, when it cannot be used)."""
    if urlsplit(url).scheme not in SCHEMES:
        _warn_once(f"scheme:{url}", f"nb_model: cache URL {redact_url(url)!r} is not redis://, rediss:// or "
                                    f"unix://; using the per-notebook SQLite cache")
        return None
    key = ("redis", url, os.environ.get("NB_MODEL_CACHE_NAMESPACE"), os.environ.get("NB_MODEL_CACHE_TTL"))
    with _lock:
        if key not in _stores:
            try:
                _stores[key] = RedisStore(url, warn)
            except ImportError:
                _warn_once("redis-missing", "nb_model: a Redis cache URL is set but redis-py is not installed "
                                            "(pip install 'nb_model[redis]'); using the per-notebook SQLite cache")
                _stores[key] = None
            except ValueError as exc:  # e.g. a port that is not a number
                _warn_once(f"bad-url:{url}", f"nb_model: cache URL {redact_url(url)!r} is not valid ({exc}); "
                                             "using the per-notebook SQLite cache")
                _stores[key] = None
        return _stores[key]


def history_row(identity: dict, gen) -> dict:
    return {
        "time": time.time(), "session": SESSION_ID, "profile": gen.profile, "model": gen.model,
        "params": dict(gen.params), "system": identity.get("system"), "prompt": identity.get("prompt"),
        "text": gen.text, "prompt_tokens": gen.usage.prompt_tokens,
        "completion_tokens": gen.usage.completion_tokens, "ttft_s": gen.ttft_s, "latency_s": gen.latency_s,
        "cached": int(bool(gen.cached)), "cost_usd": gen.cost_usd, "finish_reason": gen.finish_reason,
        "error": gen.error, "usage_estimated": int(bool(gen.usage.estimated)),
    }


class CacheRouter:
    """What `Client.cache` holds by default; `profile_url` is the profile's `cache_url`, if any."""

    def __init__(self, profile_url: str | None = None) -> None:
        self.profile_url = profile_url

    def url(self) -> str | None:
        return os.environ.get("NB_MODEL_CACHE_URL") or self.profile_url

    def entries_store(self) -> SQLiteStore | RedisStore | None:
        url = self.url()
        store = shared_store(url) if url else None
        return store if store is not None else local_store()

    def lookup(self, identity: dict):
        store = self.entries_store()
        if store is None:
            return None
        key = cache_key(identity)
        gen = store.lookup(key)
        session.count(hit=gen is not None)
        return gen

    def store(self, identity: dict, gen, *, refreshed: bool = False) -> None:
        """Keep a finished generation; a `--refresh` (no lookup before it) counts as a miss here."""
        store = self.entries_store()
        if store is None:
            return
        if refreshed:
            session.count(hit=False)
        store.store(cache_key(identity), gen, prompt_head(identity))

    def record(self, identity: dict, gen) -> None:
        """History hook: called by the client core once per finished generation (hits and errors too)."""
        row = history_row(identity, gen)
        session.add(row)
        local = local_store()
        if local is not None:
            local.record(row)


def recent_history(n: int | None = None) -> list[dict]:
    """The notebook's history (this session's, when there is no cache file), oldest first."""
    local = local_store()
    if local is not None:
        return local.history(n)
    rows = session.snapshot()
    return rows[-n:] if n else rows


def use_file(path: str | Path | None) -> SQLiteStore | None:
    """`%generate cache --file PATH|DIR`: switch this session to that file (DIR/cache.sqlite) and open it now."""
    location.set_override(path)
    return local_store()


def reset() -> None:
    """Forget open stores, overrides, warnings and session counters (a fresh kernel's state)."""
    global session
    with _lock:
        for store in _stores.values():
            if store is not None:
                store.close()
        _stores.clear()
        forget_said()
    location.set_override(None)
    session = SessionLog()
