"""`generate_many`: many prompts at once through the client core, with one shared backoff and an
in-flight window that follows the server (see `flow`), optionally several short prompts per request
(see `packing`).

Every item goes through the client core (`client_for(profile).stream(...)`), so
the cache, the profile's rate limiter (shared by all threads, or by all kernels
through Redis) and the retry policy apply to each item as to a single cell.

A failed item does not stop the batch: it comes back as a `Generation` with
``finish_reason == "error"``, its one-line message in ``.error`` and any partial
text kept, so results stay one type and line up with the input.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from .. import packing
from ..client import MAX_HINT_S, RETRY_STATUS, backoff_delay, check_cache_mode, client_for
from ..notices import notice
from ..tokens import estimate_tokens
from ..errors import APIError, ConfigError, ConnectionFailed, StreamBroken
from ..flow import OUTAGE_BUDGET_S, Gate, Window, default_cap
from ..params import PARAMS, validate_params
from ..results import Generation, Usage
from .items import items_of, _check_pack, _failed, is_pandas, fill_item

ERRORS = ("collect", "raise")

def _hint(headers: dict | None) -> float | None:
    """The server's wait hint (Retry-After, retry-after-ms) in seconds, or None when it gave none."""
    if not headers or not {k.lower() for k in headers} & {"retry-after", "retry-after-ms"}:
        return None
    delay = backoff_delay(0, headers)
    return delay if delay >= 0 else None


def _retryable(exc: APIError, stream) -> bool:
    """A failure worth waiting out: refused connection, 429/5xx, before any text arrived."""
    if isinstance(exc, StreamBroken) or (stream is not None and stream.generation.text):
        return False
    return isinstance(exc, ConnectionFailed) or exc.status in RETRY_STATUS


class _Batch:
    """The worker side: items and packs, streams registered so they can be closed, one shared backoff
    (`flow.Gate`) and the in-flight window (`flow.Window`)."""

    def __init__(self, client, prompts: list, call: dict, window: Window, gate: Gate,
                 max_retries: int | None) -> None:
        self.client, self.prompts, self.call = client, prompts, call
        self.window, self.gate, self.max_retries = window, gate, max_retries
        self.stop = threading.Event()
        self.streams: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def _request(self, prompt: str, call: dict, history: bool = True):
        """One request through the shared gate: retried while the batch's outage budget lasts (and within
        max_retries, if given). Returns the finished Stream, or None when the batch stopped."""
        attempt, started = 0, time.monotonic()
        while True:
            self.gate.wait(self.stop)
            if self.stop.is_set():
                return None
            stream = self.client.stream(prompt, max_retries=0, **call)  # ConfigError: refused before sending
            stream.history = history
            rid = next(self._ids)
            sent = []
            stream.on_send = lambda: (sent.append(1), self.window.sent(rid))
            with self._lock:
                self.streams[rid] = stream
            if self.stop.is_set():
                stream.close()
            try:
                stream.text()
            except APIError as exc:
                exc.generation = stream.generation
                if not _retryable(exc, stream):
                    raise
                hint = _hint(exc.headers)
                if hint is not None and hint > MAX_HINT_S:
                    raise APIError(f"{exc} (server asks to wait {hint:.0f} s: try later)", status=exc.status,
                                   request_id=exc.request_id) from None
                self.gate.failure(hint)
                attempt += 1
                if self.gate.exhausted() or (self.max_retries is not None and attempt > self.max_retries):
                    if attempt > 1:
                        exc.args = (f"{exc} ({attempt} attempts in {time.monotonic() - started:.0f} s)",)
                    stream.generation.error = str(exc)
                    raise
                continue
            finally:
                self.window.done(rid)
                with self._lock:
                    self.streams.pop(rid, None)
            if sent:
                self.gate.success()
            return stream

    def run(self, i: int) -> list[tuple[int, Generation | None, BaseException | None]]:
        if self.stop.is_set():
            return [(i, None, None)]
        name = self.client.profile.name
        prompt = self.prompts[i]
        if isinstance(prompt, BaseException):  # the template could not be filled for this item
            return [(i, _failed(prompt, name), prompt)]
        try:
            stream = self._request(prompt, self.call)
        except APIError as exc:  # one item's failure, reported with the item
            gen = getattr(exc, "generation", None) or _failed(exc, name)
            gen.finish_reason, gen.error = "error", gen.error or _failed(exc, name).error
            return [(i, gen, exc)]
        except Exception as exc:  # noqa: BLE001 - refused before sending (e.g. over the context window)
            return [(i, _failed(exc, name), exc)]
        if stream is None:
            return [(i, None, None)]
        gen = stream.generation
        return [(i, None, None)] if gen.finish_reason == "stopped" else [(i, gen, None)]

    def run_pack(self, group: list[int], budget: int) -> tuple[list, list[int]]:
        """One request for the items of `group`; (results of the items its answer gave, indices to retry
        alone)."""
        prompts = [self.prompts[i] for i in group]
        call = {**self.call, "max_tokens": packing.pack_tokens(len(group), budget), "cache": "off"}
        try:
            stream = self._request(packing.build(prompts, budget), call, history=False)
        except Exception:  # noqa: BLE001 - the pack failed as a whole: each item goes alone
            return [], list(group)
        if stream is None or stream.generation.finish_reason == "stopped":
            return [(i, None, None) for i in group], []
        pack = stream.generation
        parts = packing.split_answer(pack.text, len(group), packing.tag_of(prompts),
                                     truncated=pack.finish_reason == "length")
        got = [(i, part) for i, part in zip(group, parts) if part is not None]
        retry = [i for i, part in zip(group, parts) if part is None]
        prompt_share = packing.apportion(pack.usage.prompt_tokens, [estimate_tokens(self.prompts[i]) for i, _ in got])
        answer_share = packing.apportion(pack.usage.completion_tokens, [estimate_tokens(p) for _, p in got])
        out = []
        for (i, part), p_tok, c_tok in zip(got, prompt_share, answer_share):
            out.append((i, self._item(i, part, pack, p_tok, c_tok, f"{group.index(i) + 1}/{len(group)}"), None))
        return out, retry

    def _item(self, i: int, text: str, pack: Generation, prompt_tokens: int, completion_tokens: int,
              where: str) -> Generation:
        """An item's Generation from its part of a pack: its share of the usage and cost (apportioned),
        cached under the item's own identity, recorded in the history as part of a pack."""
        client = self.client
        params = {k: v for k, v in self.call.items() if k in PARAMS}
        spec = client.spec(self.prompts[i], system=self.call.get("system"), **params)
        usage = Usage(prompt_tokens, completion_tokens)
        gen = Generation(text=text, finish_reason="stop", usage=usage, model=pack.model, ttft_s=pack.ttft_s,
                         latency_s=pack.latency_s, profile=pack.profile, params={**spec.params, "pack": where},
                         request_id=pack.request_id,
                         cost_usd=usage.total_tokens * client.profile.price_per_1m / 1e6)
        identity = client.identity(spec)
        cache, mode = client.cache, self.call.get("cache", "use")
        if cache is not None and mode != "off":
            cache.store(identity, gen, refreshed=mode == "refresh")
        record = getattr(cache, "record", None)
        if record is not None:
            record(identity, gen)
        return gen

    def cached(self, i: int) -> Generation | None:
        """The item's cached answer (cache="use"), looked up without sending anything."""
        cache = self.client.cache
        prompt = self.prompts[i]
        if cache is None or self.call.get("cache", "use") != "use" or isinstance(prompt, BaseException):
            return None
        params = {k: v for k, v in self.call.items() if k in PARAMS}
        try:
            spec = self.client.spec(prompt, system=self.call.get("system"), **params)
        except ConfigError:
            return None
        return cache.lookup(self.client.identity(spec))

    def halt(self) -> None:
        """Start no new item; close the streams in flight (their connections drop now)."""
        self.stop.set()
        with self._lock:
            streams = list(self.streams.values())
        for stream in streams:
            stream.close()


def generate_many(prompts, max_workers: int | None = None, *, template: str | None = None,
                  namespace: Mapping | None = None, profile: str | None = None, model: str | None = None,
                  system: str | None = None, cache: str = "use", max_retries: int | None = None,
                  errors: str = "collect", progress: bool = True, pack: int | str | None = None,
                  outage_budget: float = OUTAGE_BUDGET_S, **params):
    """Generate for many prompts concurrently; results in input order.

    `prompts`: a list (or any sequence) or a pandas Series of prompts; with
    `template=`, of items filling it (dicts / DataFrame rows fill `{key}`, any
    item is `{item}`, other names come from `namespace`). Returns a list, or a
    Series with the input's index. `params` are generation parameters
    (max_tokens, temperature, ...).

    Requests in flight follow the server: about the profile's requests/s times
    the latency observed (Little's law), at most `max_workers` (default 64, or
    NB_MODEL_MAX_IN_FLIGHT); the profile's rate limiter paces them all.

    Failures that pass (429, 5xx, refused connections) pause every worker on the
    server's hint; an item gives up only after `outage_budget` seconds (default
    60) in which the batch saw nothing but failures, or after `max_retries`
    retries when that is given.

    `pack=N` sends up to N short prompts per request as a numbered list and
    splits the answer back; `pack="auto"` packs the short prompts as many as fit.
    An item whose part of the answer is missing or unreadable is retried alone;
    each item is cached on its own with its apportioned share of the usage.

    The list returned carries this batch's own figures in `.stats` (a Series
    in `.attrs["stats"]`): packs sent, items retried alone, peak requests in
    flight, pauses on the server's hints.

    errors="collect" (default): a failed item is a `Generation` with
    finish_reason "error" and `.error` set; "raise": the first failure to happen
    stops the batch and is raised. Interrupting (Ctrl-C / the kernel's stop
    button) cancels what has not started, closes the streams in flight and
    returns what finished; unfinished items are None.
    """
    if errors not in ERRORS:
        raise ConfigError(f"errors must be 'collect' or 'raise', got {errors!r}")
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                    or max_workers < 1):
        raise ConfigError(f"max_workers must be a positive integer, got {max_workers!r}")
    if isinstance(outage_budget, bool) or not isinstance(outage_budget, (int, float)) or not outage_budget >= 0:
        raise ConfigError(f"outage_budget must be a number of seconds (≥ 0), got {outage_budget!r}")
    _check_pack(pack)
    check_cache_mode(cache)
    items, index = items_of(prompts)
    client = client_for(profile, model=model)
    validate_params({**client.profile.defaults, **params}, client.profile)  # bad params: one line, nothing sent
    filled: list = []
    for n, item in enumerate(items):
        try:
            filled.append(fill_item(template, item, namespace))
        except ConfigError as exc:
            if errors == "raise" or template is None:  # a usage mistake, not one item's problem
                raise ConfigError(f"item {n}: {exc}") from None
            filled.append(exc)
    if filled and all(isinstance(p, ConfigError) for p in filled):
        raise filled[0]  # the template fits no item: say it once, send nothing
    cap = max_workers if max_workers is not None else default_cap()
    results = _run(client, filled, cap, errors, progress,
                   dict(system=system, cache=cache, stream=False, **params), pack=pack,
                   gate=Gate(float(outage_budget)), max_retries=max_retries)
    if index is not None:
        import pandas as pd
        name = prompts.name if is_pandas(prompts, "Series") else None
        series = pd.Series(list(results), index=index, dtype=object, name=name)
        series.attrs["stats"] = results.stats
        return series
    return results


class BatchResults(list):
    """A batch's results in input order (a plain list), with `.stats`: that batch's own figures (packs,
    unpacked, peak_in_flight, pauses), right however many batches run at once."""

    def __init__(self, items, stats: dict[str, Any]):
        super().__init__(items)
        self.stats = stats


last_run: dict[str, Any] = {}  # a copy of the figures of the last batch to finish in this process
_last_run_lock = threading.Lock()


def _plan(batch: _Batch, results: list, pack: int | str | None) -> deque:
    """The jobs of a batch: ("one", index, None), or with `pack`, ("pack", indices, budget) for the short
    prompts that fit together; items already in the cache go straight into `results`."""
    prompts, profile = batch.prompts, batch.client.profile
    todo = list(range(len(prompts)))
    if pack in (None, 1):
        return deque(("one", i, None) for i in todo)
    packable = []
    for i in todo:
        hit = batch.cached(i)
        if hit is not None:
            hit.cached = True
            results[i] = hit
            packable.append(None)
        else:
            packable.append(prompts[i] if isinstance(prompts[i], str) else None)
    budget = packing.item_budget(batch.call, profile.defaults)
    groups = packing.plan(packable, pack, budget, profile.max_tokens_cap, profile.context_window)
    grouped = {i for g in groups for i in g}
    jobs = deque(("pack", g, budget) for g in groups)
    jobs.extend(("one", i, None) for i in todo if i not in grouped and results[i] is None)
    return jobs


def _run(client, prompts: list, cap: int, errors: str, progress: bool, call: dict, *,
         pack: int | str | None = None, gate: Gate | None = None, max_retries: int | None = None) -> list:
    results: list[Generation | None] = [None] * len(prompts)
    stats: dict[str, Any] = {"packs": 0, "unpacked": 0, "peak_in_flight": 0, "pauses": 0}
    if not prompts:
        return BatchResults(results, stats)
    window = Window(client.profile.qps, cap)
    gate = gate or Gate()
    batch = _Batch(client, prompts, call, window, gate, max_retries)
    client.start_embedded()  # here, not in a worker thread: its one-line notice belongs to this cell
    from ..display.batch import end_progress, progress_bar
    bar = progress_bar(len(prompts), progress)
    jobs = _plan(batch, results, pack)
    done_now = sum(r is not None for r in results)
    if done_now:
        bar.update(done_now)
    stats["packs"] = sum(j[0] == "pack" for j in jobs)
    pool = ThreadPoolExecutor(max_workers=min(cap, len(jobs) or 1), thread_name_prefix="nb_model-batch")
    running: dict = {}
    failures = 0

    def submit() -> None:
        while jobs and len(running) < window.target():
            kind, what, budget = jobs.popleft()
            fut = pool.submit(batch.run_pack, what, budget) if kind == "pack" else pool.submit(batch.run, what)
            running[fut] = kind

    try:
        submit()
        while running:
            done, _ = wait(set(running), timeout=0.05, return_when=FIRST_COMPLETED)
            for fut in done:
                kind = running.pop(fut)
                if kind == "pack":
                    outcome, retry = fut.result()
                    stats["unpacked"] += len(retry)
                    jobs.extendleft(("one", i, None) for i in reversed(retry))
                else:
                    outcome = fut.result()
                for i, gen, exc in outcome:
                    results[i] = gen
                    if exc is not None:
                        if errors == "raise":
                            raise exc
                        failures += 1
                        bar.set_postfix(errors=failures, refresh=False)
                    if gen is not None or exc is not None:
                        bar.update(1)
            submit()
    except KeyboardInterrupt:
        finished = sum(r is not None for r in results)
        notice(f"nb_model: interrupted — {finished} of {len(prompts)} prompts finished; "
               "the unfinished ones are None")
    finally:
        batch.halt()
        pool.shutdown(wait=False, cancel_futures=True)
        end_progress(bar)
        stats.update(peak_in_flight=window.peak, pauses=gate.pauses)
        with _last_run_lock:
            last_run.clear()
            last_run.update(stats)
    return BatchResults(results, stats)
