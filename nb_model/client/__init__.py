"""The client core: profile → protocol adapter → HTTP (retries, rate limit) → Generation.

Everything that calls a model (magic, panel, batch, relay tests) goes through
`Client.stream()`; `generate()` is the same call consumed whole. The pieces:
`stream` (one generation in flight), `http` (session and error wording),
`retries` (backoff), `embedded` (the in-kernel sandbox servers).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

from ..config import EMBEDDED_PREFIX, Profile, redact_url, resolve_profile, validate_params
from ..errors import ConfigError
from ..limits import bucket_for
from ..notices import notice_once
from ..protocols import Spec
from ..results import Generation
from ..tokens import estimate_tokens
from ..unicode_text import notice_text as unicode_notice, replace_surrogates
from .embedded import EMBEDDED, _embedded, embedded_sandbox
from .http import _session
from .retries import MAX_HINT_S, RETRY_STATUS, backoff_delay, server_hint
from .stream import INCOMPLETE, UNFINISHED, Stream

__all__ = ["CACHE_MODES", "EMBEDDED", "INCOMPLETE", "MAX_HINT_S", "RETRY_STATUS", "UNFINISHED", "Client", "Stream",
           "backoff_delay", "check_cache_mode", "client_for", "embedded_sandbox", "server_hint", "_embedded"]

CACHE_MODES = ("use", "refresh", "off")  # look up and store · only store (a fresh answer) · neither


def check_cache_mode(mode) -> None:
    """One ConfigError line unless `mode` is one of CACHE_MODES."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(map(repr, CACHE_MODES))}, got {mode!r}")


class Client:
    """One profile's connection: a requests.Session, a rate limiter and an optional cache."""

    def __init__(self, profile: Profile | str | None = None, *, cache=None) -> None:
        self.profile = profile if isinstance(profile, Profile) else resolve_profile(profile)
        self.cache = cache
        self.limiter = bucket_for(self.profile)
        self._session = None

    @property
    def session(self):
        if self._session is None:
            self._session = _session()
        return self._session

    def start_embedded(self) -> None:
        """Start (and announce, once) the in-kernel server this profile uses, if any. Called for each valid
        request, before the cache is asked, so a cached re-run shows the same notice as the first run."""
        if not self.profile.endpoint or self.profile.endpoint.startswith(EMBEDDED_PREFIX):
            self.endpoint()

    def endpoint(self) -> str:
        endpoint = self.profile.endpoint
        if endpoint and not endpoint.startswith(EMBEDDED_PREFIX):
            return endpoint
        return embedded_sandbox(endpoint[len(EMBEDDED_PREFIX):] if endpoint else "sandbox").url

    def identity(self, spec: Spec) -> dict[str, Any]:
        """Everything that changes the answer, for the cache key: never a key, nor credentials in the URL."""
        p = self.profile
        return {
            "protocol": p.protocol, "endpoint": redact_url(p.endpoint) if p.endpoint else EMBEDDED,
            "model": p.model,
            "system": spec.system, "messages": spec.messages, "prompt": spec.prompt,
            "params": {k: v for k, v in sorted(spec.params.items()) if v is not None},
            # a tool exchange: the schemas, and the calls and results so far (a changed result, a new answer)
            **{k: getattr(spec, k) for k in ("tools", "tool_choice", "after") if getattr(spec, k)},
        }

    def redact(self, text: str) -> str:
        key = self.profile.api_key()
        return text.replace(key, "***") if key and text else text

    def describe_failure(self, exc: Exception, url: str, advice: bool = True) -> str:
        name = type(exc).__name__
        text = str(exc).lower()
        tip = "check that the server is running"
        if "timed out" in text or "timeout" in name.lower():
            what = f"no data for {self.profile.read_timeout:g} s (read timeout)"
        elif "refused" in text:
            what = "connection refused"
        elif any(w in text for w in ("failed to resolve", "name or service not known", "getaddrinfo failed",
                                     "nodename nor servname", "temporary failure in name resolution")):
            host = urlsplit(url).hostname or url
            what, tip = f"cannot resolve host {host}", f"check the endpoint of profile {self.profile.name!r}"
        elif "prematurely" in text or "incomplete" in text or "broken" in text:
            what = "the server closed the connection mid-reply"
        else:
            what = f"connection failed ({name})"
        tail = f" — {tip}, then re-run" if advice else ""
        where = urlsplit(url).netloc.rpartition("@")[2] or redact_url(url)  # host:port: the path adds only width
        return self.redact(f"{what} talking to {where}{tail}")

    def spec(self, prompt: str, *, system: str | None = None, messages: list[dict] | None = None,
             tools: list[dict] | None = None, tool_choice=None, after: list[dict] | None = None,
             **params) -> Spec:
        given = {k: v for k, v in params.items() if v is not None}  # None (an unset cell option) keeps the default
        params = validate_params({**self.profile.defaults, **given}, self.profile)
        if not prompt or not prompt.strip():
            raise ConfigError("the prompt is empty: write the prompt in the cell body (or pass prompt=...)")
        (prompt, system, messages), bad = replace_surrogates([prompt, system, messages])
        if bad:
            notice_once("surrogates", unicode_notice(bad))
        spec = Spec(prompt=prompt, system=system or None, messages=messages or None, params=params,
                    tools=tools or None, tool_choice=tool_choice, after=after or None)
        self._check_context(spec)
        return spec

    def _check_context(self, spec: Spec) -> None:
        """Refuse before sending when the prompt (estimated) plus the reply budget (max_tokens) cannot fit."""
        window, name = self.profile.context_window, self.profile.name
        needed = estimate_tokens(spec.transcript())
        reply = spec.params.get("max_tokens") or 0
        if needed + reply <= window:
            return
        if spec.messages:
            what = f"the chat ({len(spec.messages)} earlier messages and this prompt) needs about {needed} tokens"
            fix = "reset the chat (%generate chat reset NAME) or continue in a new one (--chat OTHER)"
        else:
            what = f"the prompt needs about {needed} tokens"
            fix = "split it (nb_model.split_text) and summarize in parts"
        if needed < window:  # the prompt fits, the reply it may get does not
            what += f" and max_tokens reserves {reply} for the reply ({needed + reply} in all)"
            fix = f"lower max_tokens to at most {window - needed}, " + ("shorten the prompt or " + fix
                                                                        if not spec.messages else fix)
        raise ConfigError(f"{what}, over the {window}-token context window of {name!r}: {fix}")

    def stream(self, prompt: str, *, system: str | None = None, messages: list[dict] | None = None,
               stream: bool = True, cache: str = "use", max_retries: int | None = None,
               on_retry: Callable[[str], None] | None = None, tools: list[dict] | None = None,
               tool_choice=None, after: list[dict] | None = None, **params) -> Stream:
        """Start a generation; iterate the returned `Stream` for text deltas. `tools` (schemas), `tool_choice`
        and `after` (the tool turns so far) are for one step of a tool exchange: see nb_model.tools."""
        check_cache_mode(cache)
        spec = self.spec(prompt, system=system, messages=messages, tools=tools, tool_choice=tool_choice,
                         after=after, **params)
        retries = self.profile.max_retries if max_retries is None else max_retries
        self.start_embedded()
        return Stream(self, spec, stream=stream, max_retries=retries, cache_mode=cache, on_retry=on_retry)

    def generate(self, prompt: str, **kw) -> Generation:
        kw.setdefault("stream", False)
        s = self.stream(prompt, **kw)
        s.text()
        return s.generation


_clients: dict[str, Client] = {}
_clients_lock = threading.Lock()


def client_for(profile: str | Profile | None = None, **overrides) -> Client:
    """A shared Client per resolved profile (so connections and limits are shared)."""
    prof = profile if isinstance(profile, Profile) else resolve_profile(profile, **overrides)
    key = str(dataclasses.astuple(prof))  # every field as given (repr hides URL credentials)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Client(prof, cache=_default_cache(prof))
        return _clients[key]


def _default_cache(profile: Profile):
    """The notebook's cache and history store (SQLite beside the notebook, or Redis): see nb_model.cache."""
    from ..cache import default_store
    return default_store(profile)
