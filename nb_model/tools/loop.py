"""The tool loop: ask the model, run the calls it asks for, send the results back, until it answers.

One step is one request. On the OpenAI chat protocol the request carries the
tools' schemas and the reply streams `tool_calls`; elsewhere (the seed API,
plain completions) the emulation convention of `nb_model.protocols.tools` is
used. Calls of one turn run one after another, in the order the model gave.
Each call's arguments are checked against the schema first; a malformed call,
an unknown tool, a declined call (`confirm`), a tool that raises or one that
runs past `timeout` all become a one-line error result the model sees (and the
view shows), never a traceback. An interrupt stops the loop and keeps what was
shown: the `Interrupted` error carries the exchange so far.

Each step goes through the client's cache like any request; its key holds the
tool schemas and every call and result so far, so a step is replayed only when
every earlier tool result is the same, and a changed result gets a fresh answer.
The tools themselves always run.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from typing import Any, Callable

from ..errors import ConfigError, Interrupted, NbModelError
from ..protocols.tools import MalformedCall, emulated_result, emulation_system, parse_emulated
from ..results import Generation
from .toolset import Tool, toolset
from .schema import check_value, convert

MAX_STEPS = 5
TIMEOUT_S = 30.0
MAX_RESULT_CHARS = 20_000  # a longer result is cut (and the model told so)


class ToolTimeout(BaseException):
    """Raised inside a tool that ran past its time (a BaseException, so the tool's own `except Exception`
    does not swallow it)."""


class View:
    """What the loop tells its display; this one shows nothing (the Python API)."""

    def text(self, delta: str) -> None: ...

    def call_started(self, record: dict) -> None: ...

    def call_done(self, record: dict) -> None: ...


def ask(record: dict) -> bool:
    """Ask on stdin whether to run a call; only y/yes runs it.

    In Jupyter, input() is the frontend's input box (an `input_request` on the kernel's stdin channel),
    answered while the cell runs; elsewhere it is the terminal. A widget button is not used: a click
    arrives as a comm message on the shell channel, which the kernel handles only after the running
    cell ends, so the cell would wait for an answer it cannot receive. Pumping the shell channel from
    inside the cell (as `jupyter-ui-poll` does) depends on kernel internals that ipykernel 7 changed
    (shell messages are dispatched under a lock held by the running cell, and `do_one_iteration` is
    gone), and a click did not get through with it here."""
    try:
        answer = input(f"run {signature(record)}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def signature(record: dict, width: int = 120) -> str:
    """`name(a='x', b=2)` of a call record, shortened to `width`."""
    args = record.get("arguments")
    if isinstance(args, dict):
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
    else:
        inner = repr(str(record.get("raw_arguments") or ""))
    text = f"{record['name']}({inner})"
    return text if len(text) <= width else text[: width - 1] + "…"


def result_text(value: Any) -> str:
    """A tool's return value as the text sent to the model: strings as they are, anything else as JSON
    (DataFrames as records, Series and mappings as objects, numpy scalars as numbers)."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=_jsonable)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"… [cut: {len(text)} characters in all]"
    return text


def _jsonable(obj: Any):
    if type(obj).__name__ == "DataFrame" and hasattr(obj, "to_dict"):
        return obj.to_dict(orient="records")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call_tool(fn: Callable, kwargs: dict, timeout: float | None):
    """`fn(**kwargs)`, stopped with `ToolTimeout` after `timeout` seconds: by a timer signal on the main
    thread (the tool is stopped where it is), else from a helper thread (the tool keeps running in the
    background; its result is dropped)."""
    if not timeout:
        return fn(**kwargs)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def expire(signum, frame):
            raise ToolTimeout()
        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return fn(**kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict = {}

    def target():
        try:
            box["value"] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
    worker = threading.Thread(target=target, name=f"nb_model-tool-{getattr(fn, '__name__', 'tool')}",
                              daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ToolTimeout()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _Exchange:
    """The state of one loop: turns after the prompt, call records, step generations."""

    def __init__(self, tools: list[Tool], emulated: bool) -> None:
        self.tools = {t.name: t for t in tools}
        self.emulated = emulated
        self.after: list[dict] = []
        self.calls: list[dict] = []
        self.steps: list[Generation] = []

    def check(self, record: dict) -> str | None:
        """Why the call cannot run (unknown tool, unreadable or wrong arguments), else None; fills
        record["arguments"] with the parsed object."""
        tool = self.tools.get(record["name"])
        if tool is None:
            return f"there is no tool named {record['name']!r}; the tools are: {', '.join(self.tools)}"
        raw = record.get("raw_arguments")
        if isinstance(raw, str):
            try:
                args = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                return f"malformed call: the arguments are not valid JSON ({exc.msg}: character {exc.pos})"
        else:
            args = raw if raw is not None else {}
        if not isinstance(args, dict):
            return f"malformed call: the arguments must be a JSON object, got {type(args).__name__}"
        record["arguments"] = args
        params = tool.schema["parameters"]
        properties = params.get("properties") or {}
        missing = [p for p in params.get("required") or [] if p not in args]
        if missing:
            return f"malformed call: missing argument(s) {', '.join(missing)} of {tool.name}"
        unknown = [a for a in args if a not in properties]
        if unknown and params.get("additionalProperties") is not True:
            return f"malformed call: {tool.name} has no parameter(s) {', '.join(unknown)}"
        for name, value in args.items():
            if name in properties and (reason := check_value(value, properties[name], name)):
                return f"malformed call: {reason}"
        return None

    def run(self, record: dict, *, confirm, timeout: float | None, view: View) -> None:
        """Run one call (or refuse it), filling the record: status, result text, error, seconds."""
        view.call_started(record)
        start = time.perf_counter()
        problem = self.check(record)
        if problem:
            record.update(status="malformed" if problem.startswith("malformed") else "error", error=problem)
        elif confirm and not (confirm(record) if callable(confirm) else ask(record)):
            record.update(status="declined", error="the user declined this call")
        else:
            tool = self.tools[record["name"]]
            kwargs = {k: convert(v, tool.hints.get(k)) for k, v in record["arguments"].items()}
            try:
                value = call_tool(tool.fn, kwargs, timeout)
                record.update(status="ok", result=result_text(value))
            except ToolTimeout:
                record.update(status="timeout", error=f"the tool ran longer than {timeout:g} s and was stopped")
            except KeyboardInterrupt:
                record.update(status="interrupted", error="interrupted by the user",
                              seconds=time.perf_counter() - start)
                view.call_done(record)
                raise
            except Exception as exc:  # noqa: BLE001 - the model gets the one line, the user sees it
                record.update(status="error", error=_one_line(exc))
        record["seconds"] = time.perf_counter() - start
        view.call_done(record)

    def reply_turns(self, gen: Generation, records: list[dict]) -> None:
        """The assistant turn that asked for `records`, then one turn per result."""
        if self.emulated:
            self.after.append({"role": "assistant", "content": gen.text.strip()})
            for r in records:
                payload = _as_json(r["result"]) if r["status"] == "ok" else None
                self.after.append({"role": "tool", "content": emulated_result(r["name"], payload, r.get("error"))})
            return
        message: dict = {"role": "assistant", "content": gen.text or None, "tool_calls": gen.tool_calls}
        self.after.append(message)
        for r in records:
            content = r["result"] if r["status"] == "ok" else json.dumps({"error": r["error"]}, ensure_ascii=False)
            self.after.append({"role": "tool", "tool_call_id": r["id"], "content": content})


def _as_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _records(gen: Generation, ex: _Exchange, step: int) -> list[dict]:
    """The calls a step's reply asks for, as records (empty: it is the answer)."""
    if not ex.emulated:
        return [{"id": c["id"], "name": c["function"]["name"], "raw_arguments": c["function"]["arguments"],
                 "step": step} for c in gen.tool_calls or []]
    try:
        call = parse_emulated(gen.text)
    except MalformedCall as exc:
        return [{"id": f"call_{step}", "name": "?", "raw_arguments": gen.text.strip()[:200], "step": step,
                 "malformed": f"malformed call: {exc}"}]
    if call is None:
        return []
    name, arguments = call
    return [{"id": f"call_{step}", "name": name, "raw_arguments": arguments, "step": step}]


class _EmulatedText:
    """Holds back a reply that may be a call by the convention (it starts with '{' or a fence) until it
    is complete; passes an answer through as it streams."""

    def __init__(self, view: View) -> None:
        self.view, self.held, self.passing = view, "", None

    def write(self, delta: str) -> None:
        if self.passing:
            return self.view.text(delta)
        self.held += delta
        head = self.held.lstrip()
        if head and self.passing is None and not head.startswith(("{", "`")):
            self.passing = True
            self.view.text(self.held)

    def flush_answer(self) -> None:
        if not self.passing and self.held:
            self.view.text(self.held)


def run_tools(client, prompt: str, tools, *, system: str | None = None, messages: list[dict] | None = None,
              cache: str = "use", stream: bool = True, max_steps: int = MAX_STEPS,
              timeout: float | None = TIMEOUT_S, confirm: bool | Callable[[dict], bool] = False,
              view: View | None = None, on_retry: Callable[[str], None] | None = None,
              tool_choice=None, **params) -> Generation:
    """Run a tool exchange with `client` and return the final `Generation`, with `.exchange` holding the
    messages, every call (name, arguments, status, result or error, seconds) and the step count.

    `tools`: functions (or `Tool`s); `max_steps`: requests at most; `timeout`: seconds per call (None: no
    limit); `confirm`: True asks before each call (input()), or a function(record) -> bool."""
    tools = toolset(tools)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise ConfigError(f"the tool timeout must be a positive number of seconds, got {timeout!r}")
    view = view or View()
    emulated = client.profile.protocol != "openai"
    ex = _Exchange(tools, emulated)
    functions = [t.schema for t in tools]
    step_system = emulation_system(system, functions) if emulated else system
    start = time.perf_counter()
    gen = Generation()
    try:
        for step in range(1, max_steps + 1):
            s = client.stream(prompt, system=step_system, messages=messages, cache=cache, stream=stream,
                              on_retry=on_retry, after=list(ex.after),
                              tools=None if emulated else [t.wire() for t in tools],
                              tool_choice=None if emulated else tool_choice, **params)
            out = _EmulatedText(view) if emulated else None
            try:
                for delta in s:
                    (out.write if out else view.text)(delta)
            except NbModelError as exc:
                partial = getattr(exc, "partial", None) or s.generation
                ex.steps.append(partial)
                exc.partial = _final(partial, ex, start, prompt, step_system, messages)
                raise
            gen = s.generation
            ex.steps.append(gen)
            records = _records(gen, ex, step)
            if not records:
                if out:
                    out.flush_answer()
                break
            for record in records:
                ex.calls.append(record)  # before it runs: an interrupt inside the tool keeps it too
                if record.get("malformed"):
                    record.update(status="malformed", error=record.pop("malformed"), seconds=0.0)
                    view.call_started(record)
                    view.call_done(record)
                else:
                    ex.run(record, confirm=confirm, timeout=timeout, view=view)
            ex.reply_turns(gen, records)
        else:
            gen = dataclasses.replace(gen, finish_reason="max_steps")
    except KeyboardInterrupt:
        final = _final(gen, ex, start, prompt, step_system, messages, reason="interrupted")
        raise Interrupted(f"stopped by user after {len(ex.calls)} tool call(s); what was shown is kept",
                          partial=final) from None
    return _final(gen, ex, start, prompt, step_system, messages)


def _final(gen: Generation, ex: _Exchange, start: float, prompt: str, system: str | None,
           messages: list[dict] | None, reason: str | None = None) -> Generation:
    """The last step's Generation carrying the whole exchange: usage and cost summed over the steps."""
    steps = ex.steps or [gen]
    final = dataclasses.replace(gen, finish_reason=reason or gen.finish_reason)
    final.usage = dataclasses.replace(gen.usage, prompt_tokens=sum(g.usage.prompt_tokens for g in steps),
                                      completion_tokens=sum(g.usage.completion_tokens for g in steps))
    final.cost_usd = sum(g.cost_usd for g in steps)
    final.latency_s = time.perf_counter() - start
    final.cached = all(g.cached for g in steps)
    turns = ([{"role": "system", "content": system}] if system else []) + list(messages or []) \
        + [{"role": "user", "content": prompt}] + ex.after
    if gen.text and reason is None:
        turns.append({"role": "assistant", "content": gen.text})
    final.exchange = {"messages": turns, "calls": ex.calls, "steps": len(ex.steps), "emulated": ex.emulated}
    return final
