"""The relay service's state (`nb-model relay`, see `hub`): its TOML config with per-user and per-group limits,
the activity ledger for the teacher's page, and `RelayService`, which holds the reused `NbModelRelay`
(profiles, keys, counters). No HTTP here."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigError
from .quotas import Quotas, open_sqlite, seconds_to_midnight, utc_day
from .relay import NbModelRelay

RELAY_SETTINGS = {"db", "redis_url", "teacher_groups", "allow_insecure_upstream", "connect_timeout",
                  "request_timeout", "sandbox", "max_body_bytes"}
LIMIT_SETTINGS = {"qps", "tokens_per_day"}
USER_SETTINGS = {"token_sha256", "groups"}
MAX_BODY = 1 << 20  # default bytes of a request body: far above a 16K-token context in any language


@dataclass(frozen=True)
class Limits:
    """One user's limits: requests per second and tokens per UTC day (0: no limit), and where they come from."""

    qps: float = 0.0
    tokens_per_day: int = 0
    source: str = "default"

    def generosity(self) -> tuple[float, float]:
        """Bigger is more generous; 0 (no limit) beats every number."""
        inf = float("inf")
        return (self.tokens_per_day or inf, self.qps or inf)

    def public(self) -> dict[str, Any]:
        return {"qps": self.qps, "tokens_per_day": self.tokens_per_day, "from": self.source}


def _limits(where: str, data: Any, source: str) -> Limits:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table with qps and/or tokens_per_day")
    unknown = set(data) - LIMIT_SETTINGS
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; allowed: qps, tokens_per_day")
    qps, tokens = data.get("qps", 0), data.get("tokens_per_day", 0)
    if isinstance(qps, bool) or not isinstance(qps, (int, float)) or qps < 0:
        raise ConfigError(f"{where}: qps must be a number >= 0 (0: no limit)")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ConfigError(f"{where}: tokens_per_day must be an integer >= 0 (0: no limit)")
    return Limits(float(qps), tokens, source)


def _default_db() -> str:
    from jupyter_core.paths import jupyter_data_dir
    return os.path.join(jupyter_data_dir(), "nb_model", "relay.sqlite")


class ServiceConfig:
    """The relay service's TOML config, checked with one-line errors."""

    def __init__(self, data: dict, path: str = "relay.toml"):
        self.path = path
        unknown = set(data) - {"relay", "profiles", "limits", "users"}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
                              "use [relay], [profiles.NAME], [limits.*], [users.NAME]")
        relay = data.get("relay", {})
        bad = set(relay) - RELAY_SETTINGS
        if bad:
            raise ConfigError(f"{path}: [relay] unknown setting(s) {', '.join(sorted(bad))}; "
                              f"allowed: {', '.join(sorted(RELAY_SETTINGS))}")
        self.relay = relay
        self.db = os.path.expanduser(relay.get("db") or _default_db())
        self.teacher_groups = set(relay.get("teacher_groups", ["staff"]))
        self.max_body = relay.get("max_body_bytes", MAX_BODY)
        if isinstance(self.max_body, bool) or not isinstance(self.max_body, int) or self.max_body < 1024:
            raise ConfigError(f"{path}: [relay] max_body_bytes must be an integer >= 1024")
        self.profiles = data.get("profiles", {})
        if not self.profiles or not isinstance(self.profiles, dict):
            raise ConfigError(f"{path}: no [profiles.NAME] table: name at least one upstream "
                              "(endpoint, protocol, model, key_env or key_file)")
        limits = data.get("limits", {})
        self.default = _limits(f"{path}: [limits.default]", limits.get("default", {}), "default")
        self.groups = {name: _limits(f"{path}: [limits.groups.{name}]", body, f"group {name}")
                       for name, body in (limits.get("groups") or {}).items()}
        self.per_user = {name: _limits(f"{path}: [limits.users.{name}]", body, f"user {name}")
                         for name, body in (limits.get("users") or {}).items()}
        self.users: dict[str, dict] = {}
        for name, body in (data.get("users") or {}).items():
            where = f"{path}: [users.{name}]"
            if not isinstance(body, dict) or set(body) - USER_SETTINGS:
                raise ConfigError(f"{where} takes token_sha256 and groups only")
            digest = body.get("token_sha256")
            if not isinstance(digest, str) or len(digest) != 64:
                raise ConfigError(f"{where}: token_sha256 must be the 64-hex SHA-256 of the user's token "
                                  "(printf %s TOKEN | sha256sum)")
            self.users[name] = {"token_sha256": digest.lower(), "groups": list(body.get("groups", []))}

    @classmethod
    def load(cls, path: str) -> "ServiceConfig":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the relay config {path}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        return cls(data, path)

    def limits_for(self, name: str, groups: list[str]) -> Limits:
        """The user's own entry, else the most generous of their groups' entries, else the default."""
        if name in self.per_user:
            return self.per_user[name]
        listed = [self.groups[g] for g in groups if g in self.groups]
        return max(listed, key=Limits.generosity) if listed else self.default


class Ledger:
    """Requests, tokens, cost and last activity per user and UTC day, for the teacher's page (SQLite)."""

    def __init__(self, path: str):
        self._db = open_sqlite(path)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS activity (user TEXT NOT NULL, day TEXT NOT NULL, "
                             "requests INTEGER NOT NULL, tokens INTEGER NOT NULL, cost REAL NOT NULL, "
                             "last REAL NOT NULL, PRIMARY KEY (user, day))")

    def record(self, user: str, tokens: int, cost: float, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO activity VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (user, day) DO UPDATE SET "
                "requests = requests + 1, tokens = tokens + excluded.tokens, cost = cost + excluded.cost, "
                "last = max(last, excluded.last)", (user, utc_day(now), tokens, cost, now))

    def summary(self, now: float, user: str | None = None) -> dict[str, dict]:
        """{user: {"today": {...}, "week": {...}, "last": ts}}; the week is the last 7 UTC days."""
        today = utc_day(now)
        week_start = utc_day(now - 6 * 86400)
        query = "SELECT user, day, requests, tokens, cost, last FROM activity WHERE day >= ?"
        args: tuple = (week_start,)
        if user is not None:
            query, args = query + " AND user = ?", (week_start, user)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        out: dict[str, dict] = {}
        for name, day, requests, tokens, cost, last in rows:
            entry = out.setdefault(name, {"today": _zero(), "week": _zero(), "last": 0.0})
            for span in (["today", "week"] if day == today else ["week"]):
                for k, v in (("requests", requests), ("tokens", tokens), ("cost", cost)):
                    entry[span][k] += v
            entry["last"] = max(entry["last"], last)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _zero() -> dict:
    return {"requests": 0, "tokens": 0, "cost": 0.0}


@dataclass(frozen=True)
class Caller:
    name: str
    groups: tuple[str, ...]
    admin: bool = False


class RelayService:
    """State of one relay service: the reused `NbModelRelay` (profiles, keys, counters), limits, ledger."""

    def __init__(self, config: ServiceConfig, prefix: str = "/", hub: bool = False):
        self.config, self.prefix, self.hub = config, prefix if prefix.endswith("/") else prefix + "/", hub
        rc = config.relay
        self.relay = NbModelRelay(
            profiles=config.profiles, qps=0.0, tokens_per_day=0, quota_db=config.db,
            redis_url=rc.get("redis_url", ""), sandbox=bool(rc.get("sandbox", False)),
            allow_insecure_upstream=bool(rc.get("allow_insecure_upstream", False)),
            connect_timeout=float(rc.get("connect_timeout", 10.0)),
            request_timeout=float(rc.get("request_timeout", 600.0)), hide_keys_from_kernels=True)
        self.ledger = Ledger(config.db)
        # one thread for every counter and ledger call: a reply's settlement is written before a later
        # request (the kernel's "what is left" after its reply) reads it
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="nb-model-relay-db")
        self._quotas: dict[Limits, Quotas] = {}
        self._pending: dict[str, set[asyncio.Future]] = {}  # settlements under way, per user

    def track(self, user: str, settlement: asyncio.Future) -> None:
        """A reply's settlement, awaited by any look at the counts that comes after the reply."""
        mine = self._pending.setdefault(user, set())
        mine.add(settlement)
        settlement.add_done_callback(lambda f: mine.discard(f))

    async def settled(self, user: str | None = None) -> None:
        """Wait for the settlements under way (the user's, or everybody's)."""
        waiting = [f for name, futures in self._pending.items() if user in (None, name) for f in futures]
        if waiting:
            await asyncio.wait(waiting)

    def quotas(self, limits: Limits) -> Quotas:
        """The counters' policy for these limits (one store for everybody: counts are per user)."""
        if limits not in self._quotas:
            self._quotas[limits] = Quotas(self.relay.quotas.store, limits.qps, limits.tokens_per_day)
        return self._quotas[limits]

    async def run(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def settle(self, quotas: Quotas, reservation, tokens: int, cost: float) -> None:
        """The reservation becomes the real count, and the request goes into the ledger (one job: a
        look at the counts queued after it sees both)."""
        quotas.settle(reservation, tokens)
        self.ledger.record(reservation.user, tokens, cost, time.time())

    def price(self, profile: str) -> float:
        return float(self.relay.routes[profile].hints.get("price_per_1m") or 0.0)

    def is_teacher(self, caller: Caller) -> bool:
        return caller.admin or bool(self.config.teacher_groups & set(caller.groups))

    def me(self, caller: Caller, now: float | None = None) -> dict[str, Any]:
        """The caller's profiles, limits, and use today (what a kernel shows in its footer)."""
        now = time.time() if now is None else now
        limits = self.config.limits_for(caller.name, list(caller.groups))
        used = self.relay.quotas.store.used(caller.name, utc_day(now))
        mine = self.ledger.summary(now, caller.name).get(caller.name)
        return {
            "user": caller.name, "groups": list(caller.groups), "limits": limits.public(),
            "tokens_used_today": used,
            "tokens_left_today": max(limits.tokens_per_day - used, 0) if limits.tokens_per_day else None,
            "resets_in_s": round(seconds_to_midnight(now)),
            "today": mine["today"] if mine else _zero(),
            "profiles": {name: prof.public(limits.qps) for name, prof in sorted(self.relay.routes.items())},
        }

    def usage(self, caller: Caller, now: float | None = None) -> dict[str, Any]:
        """Every user's line for a teacher, the caller's own line for anyone else."""
        now = time.time() if now is None else now
        rows = self.ledger.summary(now, None if self.is_teacher(caller) else caller.name)
        users = []
        for name in sorted(rows):
            row = rows[name]
            users.append({"user": name, "today": _rounded(row["today"]), "week": _rounded(row["week"]),
                          "last_activity": datetime.fromtimestamp(row["last"], timezone.utc).isoformat(
                              timespec="seconds")})
        return {"day": utc_day(now), "week_from": utc_day(now - 6 * 86400), "all_users": self.is_teacher(caller),
                "users": users}

    def stop(self) -> None:
        self.relay.stop()
        self.ledger.close()
        self.pool.shutdown(wait=False)


def _rounded(span: dict) -> dict:
    return {**span, "cost": round(span["cost"], 6)}


def caller_for_token(config: ServiceConfig, token: str) -> Caller | None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    for name, entry in config.users.items():
        if hmac.compare_digest(digest, entry["token_sha256"]):
            return Caller(name, tuple(entry["groups"]))
    return None
