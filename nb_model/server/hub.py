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

import html
import json
import logging
import os
from typing import Any

from tornado import web

from .relaying import RelayError, json_error, relay_request
from .service import Caller, Limits, RelayService, ServiceConfig, caller_for_token

__all__ = ["Limits", "RelayService", "ServiceConfig", "main", "make_app"]

log = logging.getLogger("nb_model.relay")



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
            raise RelayError(401 if not self._bearer() else 403, self._denied())
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
        return caller_for_token(self.service.config, token)

    def check_xsrf_cookie(self) -> None:  # token auth only: browsers never add the header themselves
        return None

    def finish(self, chunk=None, set_content_type: str | None = None):
        """`forward` passes the upstream's content type (as to Jupyter's APIHandler)."""
        if set_content_type:
            self.set_header("Content-Type", set_content_type)
        return super().finish(chunk)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        body = json_error(self, status_code, kwargs.get("exc_info"))
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def on_connection_close(self) -> None:
        if self.passthrough is not None:
            self.passthrough.client_gone = True


def _too_large(limit: int) -> RelayError:
    return RelayError(413, f"nb_model relay: the request is larger than this service takes ({limit:,} bytes, "
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
            raise RelayError(400, "nb_model relay: the Content-Length header is not a number") from None
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
        quotas = service.quotas(service.config.limits_for(caller.name, list(caller.groups)))
        price = service.price(name) if name in service.relay.routes else 0.0

        def settle(reservation, tokens: int) -> None:
            service.settle(quotas, reservation, tokens, tokens * price / 1e6)

        await relay_request(self, service.relay, name, path, bytes(self._body), user=caller.name, quotas=quotas,
                            run=service.run, settle=settle, log=log, serves="this service",
                            insecure_fix="use https or set allow_insecure_upstream in [relay]",
                            track=lambda settlement: service.track(caller.name, settlement))


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
            raise RelayError(401 if not self._bearer() else 403, self._denied())
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
