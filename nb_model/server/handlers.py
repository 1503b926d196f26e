"""HTTP handlers under ``{base_url}nb-model/``: ``relay/<profile>/<path>``, ``sandbox/<path>``, ``status``.

Callers authenticate with Jupyter's own auth (browser, Jupyter token) or with
``Authorization: Bearer <relay token>`` (kernels, from ``$NB_MODEL_RELAY_TOKEN``).
Errors are JSON in the APIs' own shape: ``{"error": {"message", "type"}}``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import quote

from jupyter_server.auth.identity import IdentityProvider, PasswordIdentityProvider
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.web import stream_request_body

from .metering import UsageMeter
from .proxy import PASS_REQUEST, PASS_SANDBOX, UpstreamFailed, forward
from .quotas import QuotaExceeded, retry_after_header
from .relay import PATH_PROTOCOL, BadRequest, NbModelRelay

try:
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # jupyter_server < 2.13 checks nothing before the handler runs
    def allow_unauthenticated(method):
        return method

ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               413: "request_too_large", 429: "rate_limit_error"}
# identity providers whose token logins are anonymous, random users: charge the server's owner
_ANONYMOUS_TOKEN_LOGINS = (IdentityProvider, PasswordIdentityProvider)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BIG_BODY = 64 << 10  # bodies from this size on are parsed and measured in a thread (a few ms of work)


class RelayError(web.HTTPError):
    """An error reply with extra headers (e.g. Retry-After) that survive tornado's `send_error`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, "%s", message)
        self.message, self.headers = message, headers or {}


class _Base(APIHandler):
    """Auth (Jupyter's, or the relay token) and JSON errors for every nb-model route."""

    relay_token_ok = False
    passthrough = None

    @property
    def relay(self) -> NbModelRelay:
        return self.settings["nb_model_relay"]

    def _bearer(self) -> str | None:
        scheme, _, token = (self.request.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    async def prepare(self) -> None:
        bearer = self._bearer()
        self.relay_token_ok = bool(bearer) and hmac.compare_digest(bearer.encode(), self.relay.relay_token.encode())
        await super().prepare()
        if self._finished or self.relay_token_ok or self.current_user is not None:
            return
        if bearer:
            raise RelayError(403, "nb_model relay: wrong relay token (did the server restart? restart the "
                                  "kernel to get the new $NB_MODEL_RELAY_TOKEN)")
        raise RelayError(401, "nb_model relay: not authenticated: send 'Authorization: Bearer "
                              "$NB_MODEL_RELAY_TOKEN' (set in kernels of this server) or log in to Jupyter")

    def check_xsrf_cookie(self) -> None:
        """Skipped for the relay token (browsers never add it on their own) and for callers about to get 401."""
        if self.relay_token_ok or (hasattr(self, "_jupyter_current_user") and self._jupyter_current_user is None):
            return None
        return super().check_xsrf_cookie()

    def quota_user(self) -> str:
        """Who is charged: a named Jupyter user, else the server's owner (`NbModelRelay.token_user`)."""
        user = self.current_user
        if self.relay_token_ok or user is None or type(self.identity_provider) in _ANONYMOUS_TOKEN_LOGINS:
            return self.relay.token_user
        return getattr(user, "username", None) or self.relay.token_user

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, RelayError):
            message, headers = exc.message, exc.headers
        else:
            message = (exc.log_message % exc.args if isinstance(exc, web.HTTPError) and exc.log_message
                       else self._reason)
            headers = {}
        for name, value in headers.items():
            self.set_header(name, value)
        kind = ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
        self.finish(json.dumps({"error": {"message": message, "type": kind}}))

    def on_connection_close(self) -> None:
        if self.passthrough is not None:
            self.passthrough.client_gone = True

    async def pass_through(self, url: str, key: str | None = None, meter: UsageMeter | None = None,
                           body: bytes | None = None, allow_headers: frozenset[str] = PASS_REQUEST):
        relay = self.relay
        hooks = {"on_start": lambda status, ctype: meter.start(ctype), "on_chunk": meter.feed} if meter else {}
        try:
            return await forward(self, url, key, connect_timeout=relay.connect_timeout,
                                 request_timeout=relay.request_timeout, body=body, allow_headers=allow_headers,
                                 **hooks)
        except UpstreamFailed as exc:
            raise RelayError(exc.status, f"nb_model relay: the upstream {exc}") from None


class _LimitedBody(_Base):
    """Reads the request body as it arrives (``stream_request_body``), up to `NbModelRelay.max_request_bytes`:
    a longer body is refused with 413 from its Content-Length before anything is read, or as soon as the
    streamed bytes pass the limit, so a huge body never sits in memory nor holds the event loop."""

    _body: bytearray
    _refused = False

    def _limit_message(self, size: int | None = None) -> str:
        limit, given = self.relay.max_request_bytes, f" ({size:,} bytes)" if size is not None else ""
        return (f"nb_model relay: the request body{given} is over this server's limit of {limit:,} bytes "
                f"(NbModelRelay.max_request_bytes): send a shorter prompt")

    async def prepare(self) -> None:
        self._body = bytearray()
        await super().prepare()
        if self._finished:
            return
        length = (self.request.headers.get("Content-Length") or "").strip()
        if length.isdigit() and int(length) > self.relay.max_request_bytes:
            self._refused = True
            raise RelayError(413, self._limit_message(int(length)))

    def data_received(self, chunk: bytes) -> None:
        if self._refused or self._finished:
            return
        self._body += chunk
        if len(self._body) > self.relay.max_request_bytes:
            self._refused, self._body = True, bytearray()
            error = RelayError(413, self._limit_message())
            self.send_error(413, exc_info=(RelayError, error, None))  # and the connection closes after it

    @property
    def body(self) -> bytes:
        return bytes(self._body)


@stream_request_body
class RelayHandler(_LimitedBody):
    """``POST relay/<profile>/<path>``: the profile's upstream, with its key, within the user's limits."""

    @allow_unauthenticated
    async def post(self, name: str, path: str) -> None:
        if self._finished:  # refused while the body came in
            return
        relay = self.relay
        profile = relay.routes.get(name)
        if profile is None:
            served = ", ".join(sorted(relay.routes)) or "none"
            raise RelayError(404, f"nb_model relay: no relay profile {name!r} (this server serves: {served})")
        target = profile.upstream(path)
        if target is None:
            allowed = ", ".join(p for p, proto in PATH_PROTOCOL.items() if profile.upstream(p))
            raise RelayError(404, f"nb_model relay: profile {name!r} ({profile.protocol}) serves {allowed}, "
                                  f"not {path!r}")
        url, protocol = target
        key = relay.key_for(name)
        if key and profile.plain_http_remote() and not relay.allow_insecure_upstream:
            raise RelayError(403, f"nb_model relay: profile {name!r} would send its key over plain http to a "
                                  "remote host; the server's admin must use https or set "
                                  "NbModelRelay.allow_insecure_upstream = True")
        loop = asyncio.get_running_loop()
        try:  # parsing and measuring a large body (up to max_request_bytes): off the event loop
            body, reserve = (profile.shape(self.body) if len(self.body) < BIG_BODY
                             else await loop.run_in_executor(None, profile.shape, self.body))
        except BadRequest as exc:
            raise RelayError(400, f"nb_model relay: {exc}") from None
        user = self.quota_user()
        try:
            reservation = await loop.run_in_executor(None, relay.quotas.admit, user, None, reserve)
        except QuotaExceeded as exc:
            raise RelayError(429, f"nb_model relay: {exc}", retry_after_header(exc.retry_after)) from None
        meter = UsageMeter(protocol, body)
        start, tokens = time.monotonic(), 0
        try:
            reply = await self.pass_through(url, key, meter, body)
            tokens = (0 if not reply.streaming else meter.tokens() if len(body) < BIG_BODY
                      else await loop.run_in_executor(None, meter.tokens))
        finally:  # the reservation becomes the real count (0 if nothing came back)
            await loop.run_in_executor(None, relay.quotas.settle, reservation, tokens)
        self.log.info("nb_model relay: %s %s/%s -> %s %d, %d tokens, %.2f s%s", user, name, path.strip("/"),
                      relay.routes[name].protocol, reply.status, tokens, time.monotonic() - start,
                      " (caller left)" if reply.client_gone else "")


@stream_request_body
class SandboxHandler(_LimitedBody):
    """``nb-model/sandbox/<path>``: the simulated engine (as ``nb-model serve``), no key, no quota."""

    @allow_unauthenticated
    async def get(self, path: str) -> None:
        if self._finished:
            return
        server = self.relay.sandbox_server
        if server is None:
            raise RelayError(404, "nb_model: the sandbox is off (NbModelRelay.sandbox = False)")
        if _CONTROL.search(path):
            raise RelayError(400, "nb_model: control characters (such as CR, LF) are not allowed in a sandbox path")
        body = self.body if self.request.method not in ("GET", "HEAD", "DELETE") else None
        await self.pass_through(f"{server.url}/{quote(path.lstrip('/'), safe='/')}", body=body,
                                allow_headers=PASS_SANDBOX)

    post = put = delete = patch = get


class StatusHandler(_Base):
    """``GET status``: the relay's profiles (names, protocols, models), limits and the caller's usage."""

    @allow_unauthenticated
    async def get(self) -> None:
        relay, user = self.relay, self.quota_user()
        used = await asyncio.get_running_loop().run_in_executor(None, relay.quotas.used_today, user)
        self.finish(json.dumps({**relay.status(), "user": user, "tokens_used_today": used}))


def handlers_for(base_url: str) -> list[tuple[str, type]]:
    root = url_path_join(base_url, "nb-model")
    return [
        (url_path_join(root, r"relay/([^/]+)/(.*)"), RelayHandler),
        (url_path_join(root, r"sandbox/(.*)"), SandboxHandler),
        (url_path_join(root, "status"), StatusHandler),
    ]
