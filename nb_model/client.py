"""The client core: profile → protocol adapter → HTTP (retries, rate limit) → Generation.

Everything that calls a model (magic, panel, batch, relay tests) goes through
`Client.stream()`; `generate()` is the same call consumed whole.
"""
from __future__ import annotations

import dataclasses
import email.utils
import json
import random
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from . import protocols
from .config import (EMBEDDED_PREFIX, ENDPOINT_EXAMPLE, Profile, ignored_env_note, redact_url, resolve_profile,
                     validate_params)
from .errors import (APIError, ConfigError, ConnectionFailed, Interrupted, NbModelError, ProtocolError,
                     StreamBroken)
from .limits import bucket_for, wait_interruptibly
from .protocols import Chunk, Spec
from .results import Generation, Usage
from .tokens import estimate_tokens
from .unicode_text import notice_text as unicode_notice, replace_surrogates

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_HINT_S = 120.0
EMBEDDED = "embedded:sandbox"  # the cache identity of the in-kernel sandbox, whatever its port
INCOMPLETE = ("error", "interrupted", "stopped")  # finish reasons never cached nor added to a chat
UNFINISHED = ("content_filter",)  # complete replies that are not the whole answer: shown, never cached
CACHE_MODES = ("use", "refresh", "off")  # look up and store · only store (a fresh answer) · neither

def _default_notice(msg: str) -> None:
    """A muted display line inside IPython/Jupyter, else a line on stderr."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = lambda: None  # noqa: E731
    if get_ipython() is not None:
        from .display import show_notice
        show_notice(msg)
    else:
        print(msg, file=sys.stderr)


_notice_handler: Callable[[str], None] = _default_notice
_embedded: dict[str, Any] = {}  # engine name -> its in-kernel sandbox server
_embedded_lock = threading.Lock()


class _ServerError(Exception):
    """An error object inside a 200 reply (e.g. vLLM's mid-stream error event), with its status code if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def set_notice_handler(fn: Callable[[str], None]) -> None:
    """Where one-line notices (e.g. 'using the embedded sandbox at …') go."""
    global _notice_handler
    _notice_handler = fn


def notice(msg: str) -> None:
    _notice_handler(msg)


_said: set[str] = set()


def notice_once(topic: str, msg: str) -> None:
    """Say `msg` once per process for `topic` (e.g. one line for a Redis server that is down)."""
    if topic not in _said:
        _said.add(topic)
        notice(msg)


def redis_topic(url: str) -> str:
    """One warning topic per Redis server, whatever uses it (cache, rate limit)."""
    return "redis-down:" + url.split("?", 1)[0].rsplit("@", 1)[-1]


def embedded_sandbox(engine: str = "sandbox"):
    """The in-process sandbox server for `engine` (see nb_model.sandbox.ENGINES), started once per
    engine on a random loopback port; "llama" is the local model, which loads in the background."""
    with _embedded_lock:
        server = _embedded.get(engine)
        if server is None:
            from .sandbox import ENGINES, make_engine, start_sandbox
            if engine not in ENGINES:
                raise ConfigError(f"unknown embedded engine {engine!r}: use endpoint "
                                  + " or ".join(EMBEDDED_PREFIX + name for name in ENGINES))
            if engine == "sandbox":
                server = start_sandbox(token_rate=200.0)
                notice(f"nb_model: no endpoint configured, using the embedded sandbox (simulated model) at "
                       f"{server.url}{ignored_env_note()}")
            else:
                model = make_engine(engine)
                server = start_sandbox(engine=model)
                notice(f"nb_model: using the local model {model.description} at {server.url}; "
                       f"loading the model (first answer after a few seconds){ignored_env_note()}")
            _embedded[engine] = server
        return server


def backoff_delay(attempt: int, headers: dict | None = None) -> float:
    """Server hint first (retry-after-ms, Retry-After seconds or HTTP date), else exponential with jitter."""
    hint = server_hint(headers)
    if hint is not None:
        return hint
    return min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())


def server_hint(headers: dict | None) -> float | None:
    """The seconds a reply's retry-after-ms or Retry-After (seconds or HTTP date) asks for, else None."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    hint = None
    if "retry-after-ms" in headers:
        try:
            hint = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    if hint is None and "retry-after" in headers:
        value = headers["retry-after"]
        try:
            hint = float(value)
        except ValueError:
            try:  # an HTTP date; anything unreadable ("soon") means the default backoff
                parsed = email.utils.parsedate_to_datetime(value) if value else None
                if parsed is not None:
                    hint = max(0.0, parsed.timestamp() - time.time())
            except (ValueError, TypeError, OverflowError):
                hint = None
    return hint if hint is not None and hint >= 0 else None


def check_cache_mode(mode) -> None:
    """One ConfigError line unless `mode` is one of CACHE_MODES."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(map(repr, CACHE_MODES))}, got {mode!r}")


_in_flight = threading.local()  # .stream: the Stream whose request this thread is sending


def _tracked_pool(base):
    """A urllib3 pool class that hands the connection it lends to the Stream sending on this thread,
    so `Stream.close()` can wake a request still waiting for the server's first byte."""
    class Tracked(base):
        def _get_conn(self, timeout=None):
            conn = super()._get_conn(timeout)
            stream = getattr(_in_flight, "stream", None)
            if stream is not None:
                stream._conn = conn
            return conn
    return Tracked


def _session():
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)  # a batch keeps up to 64 in flight
    adapter.poolmanager.pool_classes_by_scheme = {"http": _tracked_pool(HTTPConnectionPool),
                                                  "https": _tracked_pool(HTTPSConnectionPool)}
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _body_pieces(raw) -> Iterator[bytes]:
    """Bytes as they arrive: whole HTTP chunks when chunked, else whatever one read returns."""
    if getattr(raw, "chunked", False) and hasattr(raw, "read_chunked"):
        yield from raw.read_chunked(decode_content=True)
        return
    while data := raw.read1(65536):
        yield data


def _server_message(resp) -> str:
    """The server's own error message, from JSON if it sent JSON, else a short text."""
    try:
        body = resp.content[:4000]
    except Exception:  # noqa: BLE001 - a broken body still gets its status reported
        return ""
    try:
        obj = json.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)
        return str(err)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text.lstrip().startswith("<"):
            return "the server sent an HTML error page"
        return " ".join(text.split())[:200]


def _advice(status: int, profile: Profile) -> str:
    if status == 401 or status == 403:
        return f"check the key: {profile.key_status()}"
    if status == 429:
        return "rate limited: lower the request rate or retry later"
    if status >= 500:
        return "the server failed: re-run the cell to retry"
    if status == 404:
        return f"check the endpoint and protocol of profile {profile.name!r}"
    return "fix the request parameters"


def _protocol_advice(profile: Profile) -> str:
    return f"check that profile {profile.name!r} uses the right protocol ({' | '.join(protocols.PROTOCOLS)})"


def _checked_key(profile: Profile) -> str | None:
    """The profile's key; one ConfigError line (the key never shown) unless it fits in an HTTP header."""
    name, key = profile.key_source()
    if key and not all("!" <= c <= "~" for c in key):  # printable ASCII, no spaces or line breaks
        raise ConfigError(f"the key in ${name} contains characters not allowed in an HTTP header: set it again")
    return key


def _setting_failure(exc: Exception, profile: Profile) -> ConfigError | None:
    """A transport error that is a setting's fault (a bad URL or header): a ConfigError, never retried."""
    from requests.exceptions import InvalidHeader, InvalidSchema, InvalidURL, MissingSchema
    if isinstance(exc, InvalidHeader):
        return ConfigError(f"profile {profile.name!r}: a request header holds characters HTTP does not allow: "
                           f"check the key ({profile.key_status()})")
    if isinstance(exc, (InvalidURL, InvalidSchema, MissingSchema)):
        return ConfigError(f"profile {profile.name!r}: endpoint {redact_url(profile.endpoint or '')!r} is not a "
                           f"valid http(s) URL ({type(exc).__name__}): write e.g. {ENDPOINT_EXAMPLE!r}")
    return None


def _wake_reader(conn) -> None:
    """Shut the connection's socket down so a read blocked in another thread returns now (close alone does not)."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Stream:
    """An in-flight generation: iterate for text deltas; `.generation` holds the result.

    Retries (within the budget) happen only before any text was yielded. After
    text was shown a broken stream raises `StreamBroken` with the partial
    `Generation` attached; an interrupt closes the connection and raises `Interrupted`.

    Iterating again replays a finished answer whole. Leaving the loop early (`break`) closes the
    connection and marks the generation "stopped" (partial text in `.generation`); iterating such a
    stream again raises `Interrupted` rather than pass the partial text off as the answer.
    """

    def __init__(self, client: "Client", spec: Spec, *, stream: bool, max_retries: int,
                 cache_mode: str = "use", on_retry: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.spec = spec
        self.streaming = stream
        self.max_retries = max_retries
        self.cache_mode = cache_mode
        self.on_retry = on_retry
        profile = client.profile
        self.generation = Generation(model=profile.model or "", profile=profile.name, params=dict(spec.params))
        self._response = None
        self._conn = None  # the connection of the request in flight, before its response exists
        self._closed = False
        self._consumed = False
        self._left = False  # the consumer left the loop before the answer was complete
        self._calls = None  # the tool calls of the reply being read (protocols.tools.ToolCallAssembler)
        self.on_send: Callable[[], None] | None = None  # called as each attempt leaves the rate limiter
        self.history = True  # False: not recorded in the history (e.g. a batch's pack, recorded per item)

    # -- public -----------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        if self._consumed:
            if self._left:
                raise Interrupted(f"this stream was stopped early (the loop was left after "
                                  f"{len(self.generation.text)} characters): its partial text is in "
                                  ".generation.text; start a new one for the whole answer", partial=self.generation)
            yield from ([self.generation.text] if self.generation.text else [])
            return
        self._consumed = True
        cache = self.client.cache if self.cache_mode != "off" else None
        identity = self.client.identity(self.spec)
        if cache is not None and self.cache_mode == "use":
            hit = cache.lookup(identity)
            if hit is not None:
                hit.cached = True
                self.generation = hit
                self._record(identity)
                if hit.text:
                    yield hit.text
                return
        start = time.perf_counter()
        try:
            yield from self._run(start)
        except GeneratorExit:  # the consumer left the loop (break) or dropped the iterator
            complete = self.generation.finish_reason is not None and not self._closed
            self.close()
            self._left = not complete
            self._finish(start, self.generation.finish_reason if complete else "stopped")
            self._record(identity)
            raise
        except KeyboardInterrupt:
            self.close()
            self._finish(start, "interrupted")
            self._record(identity)
            raise Interrupted(
                f"stopped by user after {self.generation.usage.completion_tokens} tokens; partial text kept",
                partial=self.generation) from None
        except NbModelError as exc:  # the Generation says what happened too (batch items keep it)
            self._release()
            self.generation.error = self.generation.error or str(exc)
            self._finish(start, "error")
            self._record(identity)
            raise
        self._finish(start, self.generation.finish_reason or "stop")
        if cache is not None and self.generation.finish_reason not in INCOMPLETE + UNFINISHED:
            cache.store(identity, self.generation, refreshed=self.cache_mode == "refresh")
        self._record(identity)

    def _record(self, identity: dict) -> None:
        """History hook: every finished generation (hits, errors and partials too) goes to the store's history,
        whatever the cache mode."""
        record = getattr(self.client.cache, "record", None)
        if record is not None and self.history:
            record(identity, self.generation)

    def text(self) -> str:
        for _ in self:
            pass
        return self.generation.text

    def close(self) -> None:
        """Stop now, from any thread: also while the request still waits for the server's first byte."""
        self._closed = True
        if self._response is None and self._conn is not None:
            _wake_reader(self._conn)
        self._release()

    def _release(self) -> None:
        """Close the current HTTP response (a retry opens a new one)."""
        resp, self._response = self._response, None
        if resp is not None:
            _wake_reader(getattr(resp.raw, "connection", None))
            try:
                resp.close()
            except Exception:  # noqa: BLE001 - closing a dead socket is fine
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals --------------------------------------------------------
    def _finish(self, start: float, reason: str) -> None:
        gen = self.generation
        gen.latency_s = time.perf_counter() - start
        gen.finish_reason = gen.finish_reason if reason == "stop" and gen.finish_reason else reason
        if not gen.text and gen.finish_reason in INCOMPLETE:
            # no answer came (an error status, nothing sent, stopped before the first byte): nothing to
            # charge beyond what the server itself reported
            gen.cost_usd = gen.usage.total_tokens * self.client.profile.price_per_1m / 1e6
            return
        if not gen.usage.prompt_tokens:
            gen.usage.prompt_tokens = estimate_tokens(self.spec.transcript())
            gen.usage.estimated = True
        if not gen.usage.completion_tokens and (gen.text or gen.tool_calls):
            gen.usage.completion_tokens = estimate_tokens(gen.text + (json.dumps(gen.tool_calls) if gen.tool_calls else ""))
            gen.usage.estimated = True
        gen.cost_usd = gen.usage.total_tokens * self.client.profile.price_per_1m / 1e6

    def _run(self, start: float) -> Iterator[str]:
        attempt = 0
        while True:
            try:
                yield from self._attempt(start)
                return
            except APIError as exc:
                self._release()
                if self._closed:
                    self.generation.finish_reason = "stopped"
                    return
                retryable = isinstance(exc, ConnectionFailed) or exc.status in RETRY_STATUS
                retryable = retryable and not self.generation.text
                if not retryable or isinstance(exc, StreamBroken):
                    raise
                if attempt >= self.max_retries:
                    if attempt:
                        exc.args = (f"{exc} ({attempt + 1} attempts)",)
                    raise
                delay = backoff_delay(attempt, exc.headers)
                if delay > MAX_HINT_S:
                    raise APIError(f"{exc} (server asks to wait {delay:.0f} s: try later)",
                                   status=exc.status, request_id=exc.request_id) from None
                attempt += 1
                if self.on_retry:
                    asked = " as the server asked" if server_hint(exc.headers) is not None else ""
                    self.on_retry(f"{exc.what} — retrying in {delay:.1f} s{asked} ({attempt}/{self.max_retries})")
                wait_interruptibly(delay)

    def _attempt(self, start: float) -> Iterator[str]:
        client, profile = self.client, self.client.profile
        self._calls, self.generation.tool_calls = None, None  # a retried attempt starts its calls afresh
        adapter = protocols.adapter(profile.protocol)
        url, body, extra = adapter.build(client.endpoint(), profile.model, self.spec, self.streaming)
        headers = {"Content-Type": "application/json", **extra}
        if self.streaming:
            headers["Accept"] = "text/event-stream" if profile.protocol != "seed" else "application/x-ndjson"
        key = _checked_key(profile)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        client.limiter.acquire()
        if self._closed:  # closed while waiting for the limiter: send nothing
            self.generation.finish_reason = "stopped"
            return
        if self.on_send is not None:
            self.on_send()
        _in_flight.stream = self
        try:
            resp = client.session.post(url, json=body, headers=headers, stream=True,
                                       timeout=(profile.connect_timeout, profile.read_timeout))
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes one line
            if self._closed:  # woken by close(): not a failure
                self.generation.finish_reason = "stopped"
                return
            setting = _setting_failure(exc, profile)
            if setting is not None:
                raise setting from None
            raise ConnectionFailed(client.describe_failure(exc, url),
                                   what=client.describe_failure(exc, url, advice=False)) from None
        finally:
            _in_flight.stream = None
            self._conn = None  # from here on the response owns the connection (or it went back to the pool)
        self._response = resp
        request_id = resp.headers.get("x-request-id") or resp.headers.get("request-id")
        self.generation.request_id = request_id
        if resp.status_code >= 400:
            msg = client.redact(protocols.clean_text(_server_message(resp)))
            resp.close()
            rid = f" [request {request_id}]" if request_id else ""
            what = f"HTTP {resp.status_code} from {profile.name}: {msg or resp.reason}{rid}"
            raise APIError(f"{what} — {_advice(resp.status_code, profile)}", what=what,
                           status=resp.status_code, request_id=request_id, headers=dict(resp.headers))
        if self.streaming:
            yield from self._read_stream(resp, adapter, start)
        else:
            yield from self._read_whole(resp, adapter, start)

    def _apply(self, chunk: Chunk, start: float) -> str:
        gen = self.generation
        if chunk.error:
            code = f" ({chunk.error_status})" if chunk.error_status else ""
            raise _ServerError(f"the server reported an error{code}: {self.client.redact(chunk.error)}",
                               chunk.error_status)
        if chunk.model:
            gen.model = chunk.model
        if chunk.usage:
            gen.usage = Usage(int(chunk.usage.get("prompt_tokens") or 0),
                              int(chunk.usage.get("completion_tokens") or 0))
        if chunk.finish_reason:
            gen.finish_reason = chunk.finish_reason
        if chunk.tool_calls:
            from .protocols.tools import ToolCallAssembler
            self._calls = self._calls or ToolCallAssembler()
            self._calls.feed(chunk.tool_calls, whole=not self.streaming)
            gen.tool_calls = self._calls.calls()
        if chunk.text:
            if gen.ttft_s is None:
                gen.ttft_s = time.perf_counter() - start
            gen.text += chunk.text
        return chunk.text

    def _read_whole(self, resp, adapter, start: float) -> Iterator[str]:
        try:
            raw = resp.content
        except Exception as exc:  # noqa: BLE001
            raise ConnectionFailed(self.client.describe_failure(exc, resp.url),
                                   what=self.client.describe_failure(exc, resp.url, advice=False)) from None
        finally:
            self._response = None
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ProtocolError(f"the server's reply is not JSON ({len(raw)} bytes); "
                                f"{_protocol_advice(self.client.profile)}") from None
        try:
            text = self._apply(adapter.parse_reply(obj), start)
        except ProtocolError as exc:
            raise ProtocolError(f"{exc}; {_protocol_advice(self.client.profile)}") from None
        except _ServerError as exc:
            self._server_error(exc)
        if text:
            yield text

    def _read_stream(self, resp, adapter, start: float) -> Iterator[str]:
        decoder = adapter.stream_decoder()
        complete = False
        pieces = _body_pieces(resp.raw)
        try:
            while not self._closed:
                try:
                    data = next(pieces, b"")
                except Exception as exc:  # noqa: BLE001 - transport failure mid-stream
                    if self._closed:
                        break  # closed by the user (Stop): not a failure
                    self._broken(self.client.describe_failure(exc, resp.url, advice=False))
                chunks = decoder.feed(data) if data else decoder.close()
                for chunk in chunks:
                    text = self._apply(chunk, start)
                    complete = complete or chunk.done or chunk.finish_reason is not None
                    if text:
                        yield text
                if not data:
                    break
        except ProtocolError as exc:
            self._broken(str(exc), protocol=True)
        except _ServerError as exc:
            self._server_error(exc)
        if self._closed:
            self.generation.finish_reason = "stopped"
            self._release()
            return
        self._release()
        if not complete and not getattr(adapter, "CLEAN_END_COMPLETES", False):
            self._broken("the stream ended before the server said it was done")

    def _server_error(self, exc: _ServerError) -> None:
        """An error object in a 200 reply: an APIError before any text (retried only for a retryable
        status it carries), a broken stream after."""
        if self.generation.text:
            self._broken(str(exc))
        if exc.status:
            advice = _advice(exc.status, self.client.profile)
        else:
            advice = "re-run the cell; if it persists, check the request and the server"
        raise APIError(f"{exc} — {advice}", what=str(exc), status=exc.status,
                       request_id=self.generation.request_id) from None

    def _broken(self, what: str, protocol: bool = False) -> None:
        gen = self.generation
        if not gen.text:
            # nothing shown yet: a wrong protocol, else a retryable failure
            if protocol:
                raise ProtocolError(f"{what}; {_protocol_advice(self.client.profile)}")
            raise ConnectionFailed(f"{what} — check that the server is running, then re-run", what=what)
        gen.finish_reason = "error"
        gen.error = what
        raise StreamBroken(f"{what}; partial text kept ({len(gen.text)} chars) — re-run the cell to retry",
                           partial=gen)


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
        return self.redact(f"{what} talking to {redact_url(url)}{tail}")

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
    from .cache import default_store
    return default_store(profile)
