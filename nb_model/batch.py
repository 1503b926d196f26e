"""Many prompts at once (`generate_many`) and inputs longer than the context window
(`split_text`, `summarize_long`).

Every item goes through the client core (`client_for(profile).stream(...)`), so
the cache, the profile's rate limiter (shared by all threads, or by all kernels
through Redis) and the retry policy apply to each item as to a single cell.

A failed item does not stop the batch: it comes back as a `Generation` with
``finish_reason == "error"``, its one-line message in ``.error`` and any partial
text kept, so results stay one type and line up with the input.
"""
from __future__ import annotations

import itertools
import re
import sys
import threading
import time
from collections import ChainMap, deque
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from . import packing
from .client import MAX_HINT_S, RETRY_STATUS, backoff_delay, check_cache_mode, client_for
from .notices import notice
from .tokens import estimate_tokens
from .config import validate_params
from .errors import APIError, ConfigError, ConnectionFailed, Interrupted, NbModelError, StreamBroken
from .flow import OUTAGE_BUDGET_S, Gate, Window, default_cap
from .results import Generation, Usage
from .textwidth import shorten

ERRORS = ("collect", "raise")


# -- generate_many ---------------------------------------------------------------
def _is_pandas(obj: Any, kind: str) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == kind


def _as_items(prompts: Any) -> tuple[list, Any]:
    """The items as a list, and the pandas index to give back (None for plain sequences)."""
    if isinstance(prompts, (str, bytes, Mapping)):
        raise ConfigError(f"generate_many needs a list or a pandas Series of prompts, got {type(prompts).__name__}")
    if _is_pandas(prompts, "DataFrame"):
        return prompts.to_dict("records"), prompts.index
    if _is_pandas(prompts, "Series"):
        return prompts.tolist(), prompts.index
    try:
        return list(prompts), None
    except TypeError:
        raise ConfigError(f"generate_many needs a list or a pandas Series of prompts, "
                          f"got {type(prompts).__name__}") from None


def fill_item(template: str | None, item: Any, namespace: Mapping | None = None) -> str:
    """The prompt of one item: the item itself, or `template` filled from it.

    A dict item (or DataFrame row) fills `{key}` references; any item is also
    `{item}`; other names come from `namespace` (e.g. the notebook's variables).
    """
    if template is None:
        if not isinstance(item, str):
            raise ConfigError(f"item is a {type(item).__name__}, not a prompt: pass template='...{{name}}...' "
                              "to fill a template from each item")
        return item
    from .template import fill
    own = item if isinstance(item, Mapping) else {}
    return fill(template, ChainMap(own, {"item": item}, namespace or {}))


def _failed(exc: BaseException, profile: str, text: str = "") -> Generation:
    message = str(exc) if isinstance(exc, NbModelError) else f"{type(exc).__name__}: {exc}"
    return Generation(text=text, finish_reason="error", error=message, profile=profile)


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _progress(total: int, enabled: bool):
    """A tqdm bar: a widget in a Jupyter kernel (shown by us, see `_end_progress`), text on stderr elsewhere."""
    from .display import in_kernel
    options = {"total": total, "desc": "generate_many", "unit": "prompt", "disable": not enabled,
               "dynamic_ncols": True}
    bar = None
    if enabled and "IPython" in sys.modules and in_kernel():
        try:
            from tqdm.notebook import tqdm as notebook_tqdm
            bar = notebook_tqdm(**options, display=False)
        except ImportError:  # no ipywidgets: the text bar below
            pass
        else:
            from IPython.display import display
            bar.nb_model_display = display(bar.container, display_id=True)
    if bar is None:
        from tqdm import tqdm
        bar = tqdm(**options)
    bar.set_postfix(errors=0, refresh=False)
    return bar


def _end_progress(bar) -> None:
    """Close the bar; a widget bar's output becomes the widget plus the final bar as text, so a saved
    notebook reads "generate_many: 100%|…| 6/6 …" (widget state is not saved; the first text would stay)."""
    bar.close()
    handle = getattr(bar, "nb_model_display", None)
    if handle is not None:
        view = {"version_major": 2, "version_minor": 0, "model_id": bar.container.model_id}
        handle.update({WIDGET_MIME: view, "text/plain": str(bar)}, raw=True)


_NOT_PARAMS = ("system", "cache", "max_retries", "stream")  # call options of a batch that are not parameters


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
        params = {k: v for k, v in self.call.items() if k not in _NOT_PARAMS}
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
        params = {k: v for k, v in self.call.items() if k not in _NOT_PARAMS}
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


def _check_pack(pack) -> None:
    if pack is None or pack == "auto":
        return
    if isinstance(pack, bool) or not isinstance(pack, int) or not 1 <= pack <= packing.MAX_PACK:
        raise ConfigError(f"pack must be an integer from 1 to {packing.MAX_PACK} or 'auto', got {pack!r}")


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
    items, index = _as_items(prompts)
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
        name = prompts.name if _is_pandas(prompts, "Series") else None
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
    bar = _progress(len(prompts), progress)
    jobs: deque = deque()
    todo = list(range(len(prompts)))
    if pack not in (None, 1):
        packable = []
        for i in todo:
            hit = batch.cached(i)
            if hit is not None:
                hit.cached = True
                results[i] = hit
                packable.append(None)
            else:
                packable.append(prompts[i] if isinstance(prompts[i], str) else None)
        budget = packing.item_budget(call, client.profile.defaults)
        groups = packing.plan(packable, pack, budget, client.profile.max_tokens_cap, client.profile.context_window)
        grouped = {i for g in groups for i in g}
        jobs.extend(("pack", g, budget) for g in groups)
        jobs.extend(("one", i, None) for i in todo if i not in grouped and results[i] is None)
        done_now = sum(r is not None for r in results)
        if done_now:
            bar.update(done_now)
    else:
        jobs.extend(("one", i, None) for i in todo)
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
        _end_progress(bar)
        stats.update(peak_in_flight=window.peak, pauses=gate.pauses)
        with _last_run_lock:
            last_run.clear()
            last_run.update(stats)
    return BatchResults(results, stats)


# -- long inputs -----------------------------------------------------------------
def _need_text(text, what: str) -> None:
    """One ConfigError line unless `text` is a string."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} needs the text as a string, got {type(text).__name__}: "
                          "read the file or column into a str first")


_LEVELS = (
    re.compile(r"\n[ \t]*\n\s*"),      # paragraph breaks
    re.compile(r"(?<=[.!?;:…])[\"')\]]*\s+|(?<=[。！？；])[”’」』）]*\s*"),  # sentence ends (CJK: no space after)
    re.compile(r"\s+"),                # spaces
)


def _units(text: str, start: int, end: int, max_tokens: int, level: int = 0):
    """Spans covering text[start:end], each within budget: cut at the coarsest boundary that works."""
    if estimate_tokens(text[start:end]) <= max_tokens:
        yield start, end
        return
    if level == len(_LEVELS):  # one huge word (or a run of CJK text): plain slices within budget
        a = start
        while a < end:
            b = min(a + 4 * max_tokens, end)
            while b - a > 1 and (n := estimate_tokens(text[a:b])) > max_tokens:
                b = a + max(1, (b - a) * max_tokens // n)  # no character counts more than one token
            yield a, b
            a = b
        return
    cuts = [m.end() for m in _LEVELS[level].finditer(text, start, end) if start < m.end() < end]
    for a, b in zip([start] + cuts, cuts + [end]):
        yield from _units(text, a, b, max_tokens, level + 1)


def split_spans(text: str, max_tokens: int = 2000, overlap: int | None = None) -> list[tuple[int, int]]:
    """(start, end) spans of `split_text`'s chunks: in order, covering the text, each within budget."""
    _need_text(text, "split_text")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    overlap = max_tokens // 10 if overlap is None else overlap
    if not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ConfigError(f"overlap must be an integer from 0 to max_tokens - 1, got {overlap!r}")
    units = list(_units(text, 0, len(text), max_tokens))
    sums = [0]  # sums[k]: the estimates of units[:k] added up (units end after whitespace or inside a word,
    for a, b in units:  # so the estimate of units joined is never above the sum of theirs)
        sums.append(sums[-1] + estimate_tokens(text[a:b]))

    def cost(i: int, j: int) -> int:  # estimate of units[i:j] joined, never below the true estimate
        return sums[j] - sums[i]

    spans, i = [], 0
    while i < len(units):
        j = i + 1
        while j < len(units) and cost(i, j + 1) <= max_tokens:
            j += 1
        spans.append((units[i][0], units[j - 1][1]))
        if j == len(units):
            break
        k = j  # the next chunk repeats the last units that fit in `overlap`, and still takes a new one
        while k - 1 > i and cost(k - 1, j) <= overlap and cost(k - 1, j + 1) <= max_tokens:
            k -= 1
        i = k
    return spans


def split_text(text: str, max_tokens: int = 2000, overlap: int | None = None) -> list[str]:
    """Chunks of `text` of at most `max_tokens` (estimated like the client does), cut at
    paragraph breaks, else sentence ends, else spaces; consecutive chunks share up to
    `overlap` tokens of context (default: a tenth of `max_tokens`)."""
    chunks = (text[a:b].strip() for a, b in split_spans(text, max_tokens, overlap))
    return [c for c in chunks if c]


MAP_PROMPT = "{instructions}\n\nPart {n} of {total} of a longer text:\n\n{chunk}"
REDUCE_PROMPT = ("{instructions}\n\nBelow are summaries of consecutive parts of one text. "
                 "Write one summary of the whole text:\n\n{summaries}")


def summarize_long(text: str, *, instructions: str = "Summarize the following text in a few sentences.",
                   chunk_tokens: int | None = None, overlap: int = 200, profile: str | None = None,
                   model: str | None = None, max_workers: int | None = None, progress: bool = True,
                   **params) -> Generation:
    """Map-then-reduce: summarize each chunk (`generate_many`), then the summaries together.

    `chunk_tokens` defaults to half of what the context window leaves after the
    reply. Summaries still over the budget are reduced again the same way. The
    returned `Generation` is the final summary; its usage and cost add up every call.
    """
    _need_text(text, "summarize_long")
    _need_text(instructions, "summarize_long's instructions")
    client = client_for(profile, model=model)
    if chunk_tokens is None:
        reply = params.get("max_tokens") or client.profile.defaults.get("max_tokens") or 512
        chunk_tokens = (client.profile.context_window - reply - estimate_tokens(instructions) - 64) // 2
    overlap = min(overlap, chunk_tokens // 4)
    calls: list[Generation] = []
    while estimate_tokens(text) > chunk_tokens:
        chunks = split_text(text, chunk_tokens, overlap)
        prompts = [MAP_PROMPT.format(instructions=instructions, n=n, total=len(chunks), chunk=c)
                   for n, c in enumerate(chunks, 1)]
        parts = generate_many(prompts, max_workers, profile=profile, model=model, errors="raise",
                              progress=progress, **params)
        if any(p is None for p in parts):
            raise Interrupted(f"stopped by user: {sum(p is not None for p in parts)} of {len(parts)} parts "
                              "summarized", partial=None)
        calls += parts
        shorter = "\n\n".join(p.text.strip() for p in parts)
        if estimate_tokens(shorter) >= estimate_tokens(text):
            raise ConfigError("the part summaries are not shorter than the text: lower max_tokens "
                              "or raise chunk_tokens")
        text = shorter
    prompt = REDUCE_PROMPT.format(instructions=instructions, summaries=text) if calls else \
        f"{instructions}\n\n{text}"
    final = client.generate(prompt, **params)
    final.usage = Usage(sum(g.usage.prompt_tokens for g in calls) + final.usage.prompt_tokens,
                        sum(g.usage.completion_tokens for g in calls) + final.usage.completion_tokens,
                        estimated=any(g.usage.estimated for g in (*calls, final)))
    final.cost_usd = sum(g.cost_usd for g in calls) + final.cost_usd
    return final


# -- a compact report (used by %%generate --over) --------------------------------------
def report_rows(results, limit: int = 10, width: int = 60) -> tuple[list[tuple[str, str]], str]:
    """(rows, summary line) for a batch's results: one short row per item, at most `limit` rows."""
    pairs = list(results.items()) if hasattr(results, "items") else list(enumerate(results))
    rows = []
    for key, gen in pairs[:limit]:
        if gen is None:
            rows.append((str(key), "not run (interrupted)"))
            continue
        body = gen.error if gen.finish_reason == "error" else gen.text
        body = shorten(" ".join((body or "").split()), width)
        count = ("~" if gen.usage.estimated else "") + str(gen.usage.completion_tokens)
        rows.append((str(key), f"{gen.finish_reason or '?':14} {count:>5} tok  {body}"))
    if len(pairs) > limit:
        rows.append(("…", f"{len(pairs) - limit} more"))
    gens = [g for _, g in pairs if g is not None]
    failed = sum(g.finish_reason == "error" for g in gens)
    parts = [f"{len(pairs)} prompts", f"{len(gens) - failed} ok"]
    if failed:
        parts.append(f"{failed} failed")
    if len(gens) < len(pairs):
        parts.append(f"{len(pairs) - len(gens)} not run")
    cached = sum(g.cached for g in gens)
    if cached:
        parts.append(f"{cached} cached")
    tokens = sum(g.usage.completion_tokens for g in gens)
    cost = sum(g.cost_usd for g in gens)
    parts.append(f"{tokens} tokens out" + (f" · ${cost:.4f}" if cost else ""))
    return rows, " · ".join(parts)


def run_magic(magics, args, cell: str) -> None:
    """`%%generate --over VAR`: the cell's template once per item; a compact table; results in --out."""
    from IPython.core.error import UsageError

    from .commands import _table

    ns = magics.shell.user_ns
    if args.over not in ns:
        raise UsageError(f"--over {args.over}: no variable of that name; define a list or Series first")
    if args.no_interpolate or getattr(args, "chat", None):
        raise UsageError("--over fills the cell from each item: drop --no-interpolate / --chat")
    try:
        items, _ = _as_items(ns[args.over])
    except ConfigError as exc:
        raise UsageError(f"--over {args.over}: {exc}") from None
    if not items:
        raise UsageError(f"--over {args.over}: the list is empty, nothing to generate; put prompts or items in it")
    pack = getattr(args, "pack", None)
    if pack is not None and pack != "auto":
        try:
            pack = int(pack)
        except ValueError:
            raise UsageError(f"--pack takes a number of prompts per request or auto, got {pack!r}") from None
    start = time.perf_counter()
    try:
        results = generate_many(ns[args.over], args.workers, template=cell.strip("\n"), namespace=ns, pack=pack,
                                profile=args.profile or magics.profile, model=args.model or magics.model,
                                system=args.system or magics.system, cache=args.cache, **magics.params(args))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    magics._store(args, results)
    rows, line = report_rows(results)
    _table(rows)
    keep = f"stored in {args.out}" if args.out else "add --out VAR to keep the results"
    print(f"— {line} · {time.perf_counter() - start:.1f} s · {keep}")
