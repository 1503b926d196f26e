"""One relayed request, as both front doors serve it: the Jupyter Server extension (`handlers`) and the
relay service (`hub`). They differ in who the caller is and which limits apply; the steps are these:
look up the profile and the upstream URL for the path, refuse a key over plain http, shape the body,
admit the caller (rate, tokens reserved), forward with the key, and settle the reservation with what
the reply really used.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from tornado import web

from .metering import UsageMeter
from .proxy import PASS_REQUEST, UpstreamFailed, forward
from .quotas import QuotaExceeded, Quotas, Reservation, retry_after_header
from .relay import PATH_PROTOCOL, BadRequest, NbModelRelay, RelayProfile

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}
BIG_BODY = 64 << 10  # bodies from this size on are parsed and measured in a thread (a few ms of work)


class RelayError(web.HTTPError):
    """An error reply with extra headers (e.g. Retry-After) that survive tornado's `send_error`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, "%s", message)
        self.message, self.headers = message, headers or {}


def error_kind(status: int) -> str:
    """The `type` of an error reply, as the APIs name theirs."""
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def json_error(handler: web.RequestHandler, status_code: int, exc_info) -> str:
    """For a handler's `write_error`: sets the error's extra headers (e.g. Retry-After) and returns the body,
    ``{"error": {"message", "type"}}`` in the APIs' own shape."""
    exc = (exc_info or (None, None))[1]
    if isinstance(exc, RelayError):
        message, headers = exc.message, exc.headers
    elif isinstance(exc, web.HTTPError) and exc.log_message:
        message, headers = exc.log_message % exc.args, {}
    else:
        message, headers = handler._reason, {}
    for name, value in headers.items():
        handler.set_header(name, value)
    return json.dumps({"error": {"message": message, "type": error_kind(status_code)}})


def route(relay: NbModelRelay, name: str, path: str, *, serves: str,
          insecure_fix: str) -> tuple[RelayProfile, str, str, str | None]:
    """(profile, upstream URL, protocol, key) for `relay/<name>/<path>`, else a 404/403 `RelayError`.
    `serves`: who lists the profiles ("this server"); `insecure_fix`: how its admin allows plain http."""
    profile = relay.routes.get(name)
    if profile is None:
        served = ", ".join(sorted(relay.routes)) or "none"
        raise RelayError(404, f"nb_model relay: no relay profile {name!r} ({serves} serves: {served})")
    target = profile.upstream(path)
    if target is None:
        allowed = ", ".join(p for p in PATH_PROTOCOL if profile.upstream(p))
        raise RelayError(404, f"nb_model relay: profile {name!r} ({profile.protocol}) serves {allowed}, "
                              f"not {path!r}")
    key = relay.key_for(name)
    if key and profile.plain_http_remote() and not relay.allow_insecure_upstream:
        raise RelayError(403, f"nb_model relay: profile {name!r} would send its key over plain http to a "
                              f"remote host; {insecure_fix}")
    return (profile, *target, key)


async def relay_request(handler: web.RequestHandler, relay: NbModelRelay, name: str, path: str, raw: bytes, *,
                        user: str, quotas: Quotas, run: Callable[..., Awaitable[Any]],
                        settle: Callable[[Reservation, int], None], log: logging.Logger, serves: str,
                        insecure_fix: str, track: Callable[[asyncio.Future], None] | None = None) -> None:
    """Serve one `POST relay/<name>/<path>` for `user` within `quotas`; `run(func, *args)` runs a counter
    call off the event loop (in order with the others), `settle(reservation, tokens)` books what was used,
    `track(settlement)` is told of the settlement as the reply ends (so a later look at the counts waits)."""
    profile, url, protocol, key = route(relay, name, path, serves=serves, insecure_fix=insecure_fix)
    loop = asyncio.get_running_loop()
    try:  # parsing and measuring a large body: off the event loop
        body, reserve = (profile.shape(raw) if len(raw) < BIG_BODY
                         else await loop.run_in_executor(None, profile.shape, raw))
    except BadRequest as exc:
        raise RelayError(400, f"nb_model relay: {exc}") from None
    try:
        reservation = await run(quotas.admit, user, None, reserve)
    except QuotaExceeded as exc:
        raise RelayError(429, f"nb_model relay: {exc}", retry_after_header(exc.retry_after)) from None
    meter = UsageMeter(protocol, body)
    start, reply = time.monotonic(), None

    async def settlement() -> int:  # counting a long prompt takes a while: then in a thread, not on the loop
        counted = reply is not None and reply.streaming
        tokens = 0 if not counted else meter.tokens() if len(body) < BIG_BODY else \
            await loop.run_in_executor(None, meter.tokens)
        await run(settle, reservation, tokens)
        return tokens

    try:
        reply = await forward(handler, url, key, connect_timeout=relay.connect_timeout,
                              request_timeout=relay.request_timeout, body=body, allow_headers=PASS_REQUEST,
                              on_start=lambda status, ctype: meter.start(ctype), on_chunk=meter.feed)
    except UpstreamFailed as exc:
        raise RelayError(exc.status, f"nb_model relay: the upstream {exc}") from None
    finally:  # the reservation becomes the real count (0 if nothing came back), tracked in this same tick
        settling = asyncio.ensure_future(settlement())
        if track is not None:
            track(settling)
        tokens = await settling
    log.info("nb_model relay: %s %s/%s -> %s %d, %d tokens, %.2f s%s", user, name, path.strip("/"), protocol,
             reply.status, tokens, time.monotonic() - start, " (caller left)" if reply.client_gone else "")
