"""`Stream`: one generation in flight: cache look-up, attempts with retries, reading the reply, the result."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable, Iterator

from .. import protocols
from ..errors import APIError, ConnectionFailed, Interrupted, NbModelError, ProtocolError, StreamBroken
from ..limits import wait_interruptibly
from ..protocols import Chunk, Spec
from ..results import Generation, Usage
from ..tokens import estimate_tokens
from .http import (_advice, _body_pieces, _checked_key, _in_flight, _protocol_advice, _server_message,
                   _ServerError, _setting_failure, _wake_reader)
from .retries import MAX_HINT_S, RETRY_STATUS, backoff_delay, server_hint

if TYPE_CHECKING:  # pragma: no cover
    from . import Client

INCOMPLETE = ("error", "interrupted", "stopped")  # finish reasons never cached nor added to a chat
UNFINISHED = ("content_filter",)  # complete replies that are not the whole answer: shown, never cached


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
        self.generation = Generation(model=profile.model or "", profile=profile.name, protocol=profile.protocol,
                                     params=dict(spec.params))
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
                hit.cached, hit.protocol = True, self.client.profile.protocol  # the cache key holds the protocol
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
        url = adapter.url_for(client.endpoint())
        body, extra = adapter.build(profile.model, self.spec, self.streaming)
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
            # one line that fits a notebook's width: the request id stays on the error and the Generation
            what = f"HTTP {resp.status_code} from {profile.name}: {msg or resp.reason}"
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
            from ..protocols.tools import ToolCallAssembler
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
