"""``nb-model relay``: the key-holding relay as a process of its own — a JupyterHub service, or a plain server.

On JupyterHub every student owns a single-user server; a key inside it could be
read by the student's kernel (same OS user). This process runs under another
account, holds the upstream key, and serves the class:

* ``POST {prefix}relay/<profile>/<path>`` — the upstream, with its key, within the caller's quota.
  Callers send ``Authorization: Bearer <their JupyterHub API token>`` (kernels have it in
  ``$JUPYTERHUB_API_TOKEN``); the Hub says who they are and which groups they are in, and
  Hub scopes (``access:services!service=<name>``) decide who may call at all.
* ``GET {prefix}api/me`` — the caller's profiles, limits and what is left today (kernels' footers).
* ``GET {prefix}`` and ``{prefix}api/usage`` — tokens, requests, cost and last activity, today and this
  week: every user for admins and the teacher groups, the caller's own line for anyone else.

The pieces are the Jupyter Server relay's: profiles and their keys (`NbModelRelay`), request shaping,
the quota counters (`Quotas`, SQLite or Redis), metering (`UsageMeter`), streaming pass-through with the
key masked (`forward`) and log redaction. What is added here is who the caller is (the Hub instead of a
per-server token), limits per user and per group, and an activity ledger for the teacher's page.

Outside JupyterHub (no ``$JUPYTERHUB_API_TOKEN``), callers are the ``[users.<name>]`` of the config,
each with the SHA-256 of its token (``token_sha256``) and its ``groups``.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tornado import web

from ..errors import ConfigError
from .metering import UsageMeter
from .proxy import UpstreamFailed, forward
from .quotas import QuotaExceeded, Quotas, retry_after_header, seconds_to_midnight, utc_day
from .relay import PATH_PROTOCOL, BadRequest, NbModelRelay

log = logging.getLogger("nb_model.relay")

RELAY_SETTINGS = {"db", "redis_url", "teacher_groups", "allow_insecure_upstream", "connect_timeout",
                  "request_timeout", "sandbox", "max_body_bytes"}
LIMIT_SETTINGS = {"qps", "tokens_per_day"}
USER_SETTINGS = {"token_sha256", "groups"}
MAX_BODY = 1 << 20  # default bytes of a request body: far above a 16K-token context in any language
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error"}


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
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
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


def _token_users(config: ServiceConfig, token: str) -> Caller | None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    for name, entry in config.users.items():
        if hmac.compare_digest(digest, entry["token_sha256"]):
            return Caller(name, tuple(entry["groups"]))
    return None


class RelayErrorReply(web.HTTPError):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, "%s", message)
        self.message, self.headers = message, headers or {}


class _Handler(web.RequestHandler):
    """Who the caller is (the Hub, or the config's [users]) and JSON errors in the APIs' own shape."""

    passthrough = None

    def initialize(self, service: RelayService) -> None:
        self.service = service

    def _bearer(self) -> str | None:
        scheme, _, token = (self.request.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() in ("bearer", "token") and token.strip() else None

    def caller(self) -> Caller:
        """The authenticated caller, else a 401/403 reply."""
        user = self.current_user
        if not user:
            raise RelayErrorReply(401 if not self._bearer() else 403, self._denied())
        return user

    def _denied(self) -> str:
        if self._bearer():
            return ("nb_model relay: this token may not use the relay (the Hub refused it, or it lacks the scope "
                    "access:services for this service: ask the Hub's admin)")
        return ("nb_model relay: not authenticated: send 'Authorization: Bearer $JUPYTERHUB_API_TOKEN' "
                "(set in every kernel of a JupyterHub server)")

    def get_current_user(self) -> Caller | None:
        token = self._bearer()
        if token is None:
            return None
        return _token_users(self.service.config, token)

    def check_xsrf_cookie(self) -> None:  # token auth only: browsers never add the header themselves
        return None

    def finish(self, chunk=None, set_content_type: str | None = None):
        """`forward` passes the upstream's content type (as to Jupyter's APIHandler)."""
        if set_content_type:
            self.set_header("Content-Type", set_content_type)
        return super().finish(chunk)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, RelayErrorReply):
            message = exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        kind = ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
        self.finish(json.dumps({"error": {"message": message, "type": kind}}))

    def on_connection_close(self) -> None:
        if self.passthrough is not None:
            self.passthrough.client_gone = True


def _too_large(limit: int) -> RelayErrorReply:
    return RelayErrorReply(413, f"nb_model relay: the request is larger than this service takes ({limit:,} bytes, "
                                "[relay] max_body_bytes): shorten the prompt")


@web.stream_request_body
class RelayHandler(_Handler):
    """``POST relay/<profile>/<path>``: the profile's upstream, with its key, within the caller's limits.

    The body is taken as it arrives, at most ``[relay] max_body_bytes`` (413 from the Content-Length before
    reading; a chunked body that passes it has its connection dropped), and is parsed and measured in a thread: a large
    body never stalls the service's other callers."""

    _body: bytearray | None = None

    def prepare(self) -> None:
        self.caller()  # refused callers are answered before their body is read
        limit = self.service.config.max_body
        try:
            declared = int(self.request.headers.get("Content-Length") or 0)
        except ValueError:
            raise RelayErrorReply(400, "nb_model relay: the Content-Length header is not a number") from None
        if declared > limit:
            raise _too_large(limit)
        self.request.connection.set_max_body_size(limit)
        self._body = bytearray()

    def data_received(self, chunk: bytes) -> None:
        if self._body is not None:  # tornado itself drops a chunked body that passes the limit
            self._body += chunk

    async def post(self, name: str, path: str) -> None:
        if self._body is None:  # answered already (413)
            return
        caller, service = self.caller(), self.service
        relay = service.relay
        profile = relay.routes.get(name)
        if profile is None:
            served = ", ".join(sorted(relay.routes)) or "none"
            raise RelayErrorReply(404, f"nb_model relay: no relay profile {name!r} (this service serves: {served})")
        target = profile.upstream(path)
        if target is None:
            allowed = ", ".join(p for p in PATH_PROTOCOL if profile.upstream(p))
            raise RelayErrorReply(404, f"nb_model relay: profile {name!r} ({profile.protocol}) serves {allowed}, "
                                       f"not {path!r}")
        url, protocol = target
        key = relay.key_for(name)
        if key and profile.plain_http_remote() and not relay.allow_insecure_upstream:
            raise RelayErrorReply(403, f"nb_model relay: profile {name!r} would send its key over plain http to a "
                                       "remote host; use https or set allow_insecure_upstream in [relay]")
        try:  # JSON parsing and token counting in a thread: the event loop keeps serving
            body, reserve = await asyncio.get_running_loop().run_in_executor(None, profile.shape, bytes(self._body))
        except BadRequest as exc:
            raise RelayErrorReply(400, f"nb_model relay: {exc}") from None
        limits = service.config.limits_for(caller.name, list(caller.groups))
        quotas = service.quotas(limits)
        try:
            reservation = await service.run(quotas.admit, caller.name, None, reserve)
        except QuotaExceeded as exc:
            raise RelayErrorReply(429, f"nb_model relay: {exc}", retry_after_header(exc.retry_after)) from None
        meter = UsageMeter(protocol, body)
        start, status, counted = time.monotonic(), 502, False
        price = service.price(name)

        async def settle() -> int:  # counting a long prompt takes a while: in a thread, not on the loop
            tokens = await asyncio.get_running_loop().run_in_executor(None, meter.tokens) if counted else 0
            await service.run(service.settle, quotas, reservation, tokens, tokens * price / 1e6)
            return tokens

        try:
            reply = await forward(self, url, key, connect_timeout=relay.connect_timeout,
                                  request_timeout=relay.request_timeout, body=body,
                                  on_start=lambda status, ctype: meter.start(ctype), on_chunk=meter.feed)
            status, counted = reply.status, reply.streaming
        except UpstreamFailed as exc:
            raise RelayErrorReply(exc.status, f"nb_model relay: the upstream {exc}") from None
        finally:  # the reservation becomes the real count (0 if nothing came back); tracked in this same
            # tick, so a look at the counts that the caller sends after this reply waits for it
            settlement = asyncio.ensure_future(settle())
            service.track(caller.name, settlement)
            tokens = await settlement
        log.info("nb_model relay: %s %s/%s -> %d, %d tokens, %.2f s", caller.name, name, path.strip("/"),
                 status, tokens, time.monotonic() - start)


class MeHandler(_Handler):
    """``GET api/me``: the caller's profiles, limits and what is left today."""

    async def get(self) -> None:
        caller = self.caller()
        await self.service.settled(caller.name)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(await self.service.run(self.service.me, caller)))


class UsageHandler(_Handler):
    """``GET api/usage``: the teacher's table as JSON (the caller's own line for students)."""

    async def get(self) -> None:
        caller = self.caller()
        await self.service.settled(None if self.service.is_teacher(caller) else caller.name)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(await self.service.run(self.service.usage, caller)))


class PageHandler(_Handler):
    """``GET {prefix}``: the teacher's page (HTML)."""

    async def get(self) -> None:
        caller = self.current_user
        if not caller:
            if self.service.hub and not self._bearer():
                self.redirect(self.get_login_url())  # Hub OAuth: log in, come back
                return
            raise RelayErrorReply(401 if not self._bearer() else 403, self._denied())
        await self.service.settled(None if self.service.is_teacher(caller) else caller.name)
        data = await self.service.run(self.service.usage, caller)
        self.finish(render_page(data, caller, self.service))


def render_page(data: dict, caller: Caller, service: RelayService) -> str:
    esc = html.escape
    head = ("<tr><th>user</th><th>tokens today</th><th>requests today</th><th>cost today</th>"
            "<th>tokens this week</th><th>requests this week</th><th>cost this week</th><th>last activity (UTC)</th></tr>")
    rows = "".join(
        f"<tr><td>{esc(u['user'])}</td><td>{u['today']['tokens']}</td><td>{u['today']['requests']}</td>"
        f"<td>${u['today']['cost']:.4f}</td><td>{u['week']['tokens']}</td><td>{u['week']['requests']}</td>"
        f"<td>${u['week']['cost']:.4f}</td><td>{esc(u['last_activity'])}</td></tr>" for u in data["users"])
    scope = "every user" if data["all_users"] else f"your own use ({esc(caller.name)})"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nb_model relay: usage</title></head><body>"
            f"<h1>nb_model relay: usage</h1><p>{scope}; today is {esc(data['day'])} (UTC), the week starts "
            f"{esc(data['week_from'])}. JSON: <a href='{esc(service.prefix)}api/usage'>api/usage</a></p>"
            f"<table border='1' cellpadding='4'>{head}{rows}</table></body></html>")


def _hub_handlers():
    """The same handlers, authenticated by the Hub (HubOAuth: token header, or the browser's login cookie)."""
    from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated

    class HubMixin(HubOAuthenticated):
        def get_current_user(self) -> Caller | None:
            model = HubOAuthenticated.get_current_user(self)
            if not model or model.get("kind", "user") != "user":
                return None
            return Caller(model["name"], tuple(model.get("groups") or ()), bool(model.get("admin")))

        def check_xsrf_cookie(self) -> None:
            if self._bearer():  # a token header: not something a browser adds on its own
                return None
            return HubOAuthenticated.check_xsrf_cookie(self)

    made = {cls: type(cls.__name__, (HubMixin, cls), {}) for cls in (RelayHandler, MeHandler, UsageHandler,
                                                                        PageHandler)}
    return made, HubOAuthCallbackHandler


def make_app(service: RelayService) -> web.Application:
    """The tornado application under the service's prefix."""
    p = service.prefix
    classes: dict = {cls: cls for cls in (RelayHandler, MeHandler, UsageHandler, PageHandler)}
    extra: list = []
    settings: dict[str, Any] = {}
    if service.hub:
        from jupyterhub.services.auth import HubOAuth
        classes, callback = _hub_handlers()
        auth = HubOAuth.instance()
        for cls in classes.values():
            cls.hub_auth = auth
        extra = [(p + "oauth_callback", callback)]
        settings["cookie_secret"] = os.urandom(32)
        settings["hub_auth"] = auth
    args = {"service": service}
    routes = [
        (p + r"relay/([^/]+)/(.*)", classes[RelayHandler], args),
        (p + "api/me", classes[MeHandler], args),
        (p + "api/usage", classes[UsageHandler], args),
        (p + "?", classes[PageHandler], args),
        *extra,
    ]
    return web.Application(routes, **settings)


def main(config_path: str, host: str | None = None, port: int | None = None) -> int:
    """Run the service until SIGTERM/Ctrl-C (``nb-model relay``)."""
    import signal
    from urllib.parse import urlsplit

    from tornado.ioloop import IOLoop

    from . import redact

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s nb_model.relay] %(message)s")
    config = ServiceConfig.load(config_path)
    hub = bool(os.environ.get("JUPYTERHUB_API_TOKEN"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/") if hub else "/"
    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
    if service_url:
        parts = urlsplit(service_url)
        host, port = host or parts.hostname, port if port is not None else parts.port
    host, port = host or "127.0.0.1", port if port is not None else 10101
    service = RelayService(config, prefix, hub=hub)
    secrets = service.relay.secrets
    redact.install(log, lambda: [*secrets(), os.environ.get("JUPYTERHUB_API_TOKEN", "")])
    app = make_app(service)
    # tornado's own cap sits above ours, so callers past ours get our 413 line, not a dropped connection
    server = app.listen(port, host, xheaders=False, max_body_size=config.max_body + (64 << 10))
    service.relay.start()
    names = ", ".join(sorted(service.relay.routes))
    log.info("serving profiles %s at http://%s:%s%s (%s)", names, host, port, prefix,
             "JupyterHub service " + os.environ.get("JUPYTERHUB_SERVICE_NAME", "") if hub else "plain server")
    loop = IOLoop.current()
    loop.asyncio_loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        service.stop()
    return 0
