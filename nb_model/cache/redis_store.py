"""A cache shared through Redis (redis-py, imported on first use).

    NB_MODEL_CACHE_URL=redis://host:6379/0?namespace=course42&ttl=86400

Keys are `nb_model:<namespace>:<sha256>`; the namespace comes from
NB_MODEL_CACHE_NAMESPACE, else the URL's `namespace=`, else "default". Entries
expire after NB_MODEL_CACHE_TTL (or `ttl=`) seconds when set. `clear` deletes
only its own namespace (SCAN + DEL). An unreachable server means one warning
and generations continue uncached.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..config import redact_url
from ..notices import notice_once, redis_topic
from ..results import Generation

SCHEMES = ("redis", "rediss", "unix")
RETRY_AFTER_S = 30.0  # after a failure, try the server again this much later (cache and rate limit alike)


def redis_client(url: str):
    """A redis-py client with short timeouts, so a dead server costs a notebook little."""
    import redis
    return redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
BATCH = 500


def parse_cache_url(url: str) -> tuple[str, str, int | None, str | None]:
    """(url for redis-py, namespace, ttl seconds, problem): our own query options are taken out."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    namespace = os.environ.get("NB_MODEL_CACHE_NAMESPACE") or query.pop("namespace", None) or "default"
    query.pop("namespace", None)
    raw_ttl = os.environ.get("NB_MODEL_CACHE_TTL") or query.pop("ttl", None)
    query.pop("ttl", None)
    ttl, problem = None, None
    if raw_ttl:
        try:
            ttl = int(raw_ttl)
            if ttl <= 0:
                raise ValueError
        except ValueError:
            ttl, problem = None, f"cache TTL must be a whole number of seconds > 0, got {raw_ttl!r}: entries will not expire"
    if not re.fullmatch(r"[\w.-]+", namespace):
        problem = f"cache namespace {namespace!r} may hold only letters, digits, '.', '_' and '-': using 'default'"
        namespace = "default"
    return urlunsplit(parts._replace(query=urlencode(query))), namespace, ttl, problem


class RedisStore:
    """Cache entries as JSON strings under one namespace prefix."""

    kind = "redis"

    def __init__(self, url: str, warn: Callable[[str], None]) -> None:
        import redis  # noqa: F401 - fails early (ImportError) when redis-py is missing

        self.url, self.namespace, self.ttl, problem = parse_cache_url(url)
        self.prefix = f"nb_model:{self.namespace}:"
        self._down_until = 0.0
        self.client = redis_client(self.url)
        if problem:
            warn(f"nb_model: {problem}")

    def describe(self) -> str:
        ttl = f", entries expire after {self.ttl} s" if self.ttl else ""
        return f"{redact_url(self.url)} (namespace {self.namespace!r}{ttl})"

    def reachable(self) -> bool:
        """PING now, without waiting out a retry pause and without a notice (for `%generate cache …`)."""
        import redis

        try:
            self.client.ping()
        except (redis.RedisError, OSError, ValueError):
            self._down_until = time.monotonic() + RETRY_AFTER_S
            return False
        self._down_until = 0.0
        return True

    def _run(self, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """One round of Redis calls; a failure is one warning and the default, never a traceback."""
        import redis

        if time.monotonic() < self._down_until:
            return default
        try:
            return fn(self.client)
        except (redis.RedisError, OSError, ValueError) as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            notice_once(redis_topic(self.url), f"nb_model: the Redis cache at {redact_url(self.url)} is "
                        f"unreachable ({type(exc).__name__}); generating without the cache")
            return default

    def lookup(self, key: str) -> Generation | None:
        raw = self._run(lambda r: r.get(self.prefix + key))
        if not raw:
            return None
        try:
            return Generation.from_dict(json.loads(raw)["generation"])
        except (ValueError, KeyError, TypeError):
            return None  # a foreign or damaged value: treat as a miss, the next store replaces it

    def store(self, key: str, gen: Generation, head: str) -> None:
        value = json.dumps({"created": time.time(), "model": gen.model, "prompt_head": head,
                            "generation": {**gen.to_dict(), "cached": False}}, ensure_ascii=False)
        self._run(lambda r: r.set(self.prefix + key, value, ex=self.ttl))

    def _scan(self, r) -> list[bytes]:
        return list(r.scan_iter(match=self.prefix + "*", count=BATCH))

    def _values(self, r, keys: list[bytes]) -> list[tuple[bytes, dict]]:
        """(key, metadata without the generation) for each key still present."""
        out = []
        for i in range(0, len(keys), BATCH):
            batch = keys[i:i + BATCH]
            for k, raw in zip(batch, r.mget(batch)):
                if raw is None:
                    continue
                try:
                    meta = json.loads(raw)
                    out.append((k, {"created": float(meta["created"]), "model": meta.get("model"),
                                    "prompt_head": meta.get("prompt_head"), "bytes": len(raw)}))
                except (ValueError, KeyError, TypeError):
                    out.append((k, {"created": 0.0, "model": None, "prompt_head": None, "bytes": len(raw)}))
        return out

    def entries(self, n: int | None = None) -> list[dict]:
        rows = self._run(lambda r: self._values(r, self._scan(r)), [])
        metas = sorted((m for _, m in rows), key=lambda m: m["created"], reverse=True)
        return [{k: m[k] for k in ("created", "model", "prompt_head")} for m in metas[:n]]

    def stats(self) -> dict:
        metas = [m for _, m in self._run(lambda r: self._values(r, self._scan(r)), [])]
        created = [m["created"] for m in metas]
        return {"entries": len(metas), "bytes": sum(m["bytes"] for m in metas),
                "oldest": min(created, default=None), "newest": max(created, default=None)}

    def clear(self, older_than_s: float | None = None) -> int:
        """Delete this namespace's entries (all, or those older than `older_than_s`)."""
        def run(r) -> int:
            keys = self._scan(r)
            if older_than_s is not None:
                cutoff = time.time() - older_than_s
                keys = [k for k, m in self._values(r, keys) if m["created"] < cutoff]
            return sum(r.delete(*keys[i:i + BATCH]) for i in range(0, len(keys), BATCH))
        return self._run(run, 0)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is fine
            pass
