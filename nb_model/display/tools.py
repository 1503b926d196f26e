"""How a tool exchange shows in a notebook: each call as it finishes, then the streamed answer.

A call is one display: a plain-text line (``🔧 name(args) → preview · 0.01 s``)
and, for frontends that render HTML, a collapsible block with the whole
arguments and result. It is published once, when the call is done, so a saved
notebook and a re-run show the same outputs.

In a Jupyter kernel a line ``⏳ calling name(args)…`` shows while the call runs.
It lives in a display that starts empty and is emptied again when the call ends
(the finished call's display follows it): nbval records a display's first
bundle and a saved notebook its last, and both are empty, so the stored
outputs do not depend on how long the call took.
"""
from __future__ import annotations

import html
import json

from ..tools.loop import View, signature
from .live import in_kernel, publish

PREVIEW_CHARS = 100
MARKS = {"ok": "🔧", "declined": "⊘", "timeout": "⏱", "interrupted": "⏹"}


def preview(text: str, width: int = PREVIEW_CHARS) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def call_line(record: dict) -> str:
    """The one plain-text line of a call."""
    status = record.get("status", "?")
    mark = MARKS.get(status, "✗")
    error = str(record.get("error", ""))
    if status == "malformed" and error.startswith("malformed call: "):
        error = error[len("malformed call: "):]
    outcome = preview(record.get("result", "")) if status == "ok" else f"{status}: {preview(error)}"
    return f"{mark} {signature(record)} → {outcome} · {record.get('seconds', 0.0):.2f} s"


def call_bundle(record: dict) -> dict:
    text = call_line(record)
    args = record.get("arguments")
    shown_args = json.dumps(args, ensure_ascii=False, indent=1, default=str) if isinstance(args, dict) \
        else str(record.get("raw_arguments") or "")
    body = record.get("result") if record.get("status") == "ok" else record.get("error", "")
    color = "#777" if record.get("status") == "ok" else "#b36b00"
    block = (f'<details style="font-size:85%;color:{color}"><summary>{html.escape(text)}</summary>'
             f'<div>arguments</div><pre>{html.escape(shown_args)}</pre>'
             f'<div>{"result" if record.get("status") == "ok" else "error"}</div>'
             f'<pre>{html.escape(str(body))}</pre></details>')
    return {"text/plain": text, "text/html": block}


def running_line(record: dict) -> str:
    """The line shown while a call runs (its arguments are not checked yet: shown as they came)."""
    shown = dict(record)
    raw = record.get("raw_arguments")
    if not isinstance(record.get("arguments"), dict):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                pass
        if isinstance(raw, dict):
            shown["arguments"] = raw
    return f"⏳ calling {signature(shown)}…"


class NotebookView(View):
    """Text deltas to the cell's live output; a 'calling…' line while a call runs (in a kernel); each
    finished call as its own display."""

    def __init__(self, live) -> None:
        self.live = live
        self._running = None  # the display of the call that runs now

    def text(self, delta: str) -> None:
        self.live.write(delta)

    def call_started(self, record: dict) -> None:
        if not in_kernel():  # a terminal cannot take a line back: the finished call is shown alone
            return
        self._running = publish({}, display_id=True)
        self._running.update({"text/plain": running_line(record)}, raw=True)

    def call_done(self, record: dict) -> None:
        if self._running is not None:
            self._running.update({}, raw=True)
            self._running = None
        meta = {"nb_model": {"tool_call": {k: v for k, v in record.items() if k != "result"}}}
        publish(call_bundle(record), metadata=meta)
