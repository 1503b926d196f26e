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
from typing import Any
from urllib.parse import quote

from jupyter_server.auth.identity import IdentityProvider, PasswordIdentityProvider
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.web import stream_request_body

from .proxy import PASS_REQUEST, PASS_SANDBOX, UpstreamFailed, forward
from .relay import NbModelRelay
from .relaying import RelayError, json_error, relay_request

try:
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # jupyter_server < 2.13 checks nothing before the handler runs
    def allow_unauthenticated(method):
        return method

# identity providers whose token logins are anonymous, random users: charge the server's owner
_ANONYMOUS_TOKEN_LOGINS = (IdentityProvider, PasswordIdentityProvider)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
        self.finish(json_error(self, status_code, kwargs.get("exc_info")))

    def on_connection_close(self) -> None:
        if self.passthrough is not None:
            self.passthrough.client_gone = True

    async def pass_through(self, url: str, body: bytes | None = None, allow_headers: frozenset[str] = PASS_REQUEST):
        """The sandbox's reply to this request, streamed back (no key, no metering)."""
        relay = self.relay
        try:
            return await forward(self, url, None, connect_timeout=relay.connect_timeout,
                                 request_timeout=relay.request_timeout, body=body, allow_headers=allow_headers)
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
        relay, loop = self.relay, asyncio.get_running_loop()
        await relay_request(self, relay, name, path, self.body, user=self.quota_user(), quotas=relay.quotas,
                            run=lambda func, *args: loop.run_in_executor(None, func, *args),
                            settle=relay.quotas.settle, log=self.log, serves="this server",
                            insecure_fix="the server's admin must use https or set "
                                         "NbModelRelay.allow_insecure_upstream = True")


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
