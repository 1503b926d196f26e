"""Showing a generation in a notebook as it arrives: live text, then the final render.

Text streams append-only to stdout (ipykernel batches it; O(n) bytes, and what
nbval records equals what the notebook saves). Rich formats (markdown, code,
json, html) show a plain-text live preview, refreshed every PREVIEW_INTERVAL
while text arrives. A display re-sends its whole bundle on each update, so the
preview is cut into slices of about SLICE_CHARS, each its own display: only the
newest slice is re-sent, earlier ones stay as they are (total bytes grow with
the text, not its square). Each slice is published empty first (`{}`: nothing
to draw, and nbval, which records a display's first bundle, has nothing to
compare) and emptied again before the final render, so nbval's recording and
the saved notebook both show just the render and the footer. Slice boundaries
depend on the text only: a rerun or a cache replay leaves the same outputs.

In a kernel a "generating…" line (published empty first, emptied at the first text) shows while
nothing has arrived. Previews, the final render and the footer also carry the small payload that
nb_model's JupyterLab renderer reads (`frontend.py`); markdown previews go out as `text/markdown`.
"""
from __future__ import annotations

import json
import re
import sys
import time

from ..params import FORMATS  # noqa: F401 - the formats an answer can be shown in
PREVIEW_INTERVAL = 0.5  # s between updates of a rich preview while text arrives
SLICE_CHARS = 384  # a preview slice ends at the first line end past this many characters


def in_kernel() -> bool:
    """True inside a Jupyter kernel (display updates reach a frontend)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def publish(bundle: dict, metadata: dict | None = None, display_id=None, update=False):
    from IPython.display import display
    return display(bundle, raw=True, metadata=metadata or {}, display_id=display_id, update=update)


_FENCE = re.compile(r"```([\w+-]*)\n(.*?)(?:```|\Z)", re.DOTALL)


def _json_in(text: str):
    """The JSON value in a reply: the whole text, else its outermost {...} or [...] span."""
    for start, end in ((0, len(text)), (text.find("{"), text.rfind("}") + 1), (text.find("["), text.rfind("]") + 1)):
        if 0 <= start < end:
            try:
                return json.loads(text[start:end])
            except ValueError:
                continue
    return None


def render_bundle(text: str, fmt: str) -> dict:
    """The final MIME bundle of a generation's text in a format."""
    if fmt == "markdown":
        return {"text/markdown": text}
    if fmt == "html":
        return {"text/html": text}
    if fmt == "code":
        fence = _FENCE.search(text)
        body = fence.group(2) if fence else text.strip()
        lang = fence.group(1) if fence else ""
        return {"text/markdown": f"```{lang}\n{body.rstrip()}\n```"}
    if fmt == "json":
        obj = _json_in(text)
        if obj is None:
            return {"text/plain": text}
        return {"application/json": obj, "text/plain": json.dumps(obj, indent=2, ensure_ascii=False)}
    return {"text/plain": text}


def slice_end(text: str, start: int) -> int | None:
    """Where the preview slice starting at `start` ends: after the first line end past SLICE_CHARS
    characters, else after the last space before twice that; None while the text cannot tell yet."""
    low, high = start + SLICE_CHARS, start + 2 * SLICE_CHARS
    newline = text.find("\n", low, high)
    if newline >= 0:
        return newline + 1
    if len(text) < high:
        return None
    space = text.rfind(" ", low, high)
    return space + 1 if space >= 0 else high


class LiveOutput:
    """Receives deltas and shows them without flooding the frontend."""

    def __init__(self, fmt: str = "text") -> None:
        self.fmt = fmt
        self.text = ""
        self._kernel = in_kernel()
        self._rich = fmt != "text" and self._kernel
        self._starts = [0]  # where each preview slice begins in the text
        self._handles = []  # one display per slice shown so far
        self._shown = []  # the text each of those displays holds
        self._last = None  # time of the last preview update
        self._waiting = None  # the "generating…" line until the first text (or the end)
        if self._kernel:
            from .frontend import waiting_bundle
            self._waiting = publish({}, display_id=True)  # empty first: nbval records a first bundle
            self._waiting.update(waiting_bundle(), raw=True)

    def _done_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting.update({}, raw=True)
            self._waiting = None

    def write(self, delta: str) -> None:
        self.text += delta
        if not delta:
            return
        self._done_waiting()
        if not self._rich:
            sys.stdout.write(delta)
            if not self._kernel:
                sys.stdout.flush()
            return
        now = time.monotonic()
        if self._last is None or now - self._last >= PREVIEW_INTERVAL:
            self._preview()
            self._last = now

    def _slices(self) -> list[tuple[int, int]]:
        """(start, end) of every slice of the text so far; the last one may still grow."""
        if not self.text:
            return []
        while (end := slice_end(self.text, self._starts[-1])) is not None and end < len(self.text):
            self._starts.append(end)
        ends = self._starts[1:] + [len(self.text)]
        return list(zip(self._starts, ends))

    def _preview(self) -> None:
        slices = self._slices()
        first = max(len(self._handles) - 1, 0)  # slices before the last one shown are complete
        for i, (start, end) in enumerate(slices[first:], first):
            if i == len(self._handles):  # empty first: nbval records a display's first bundle
                self._handles.append(publish({}, display_id=True))
                self._shown.append("")
            if self._shown[i] != self.text[start:end]:
                self._shown[i] = self.text[start:end]
                self._handles[i].update(self._preview_bundle(self._shown[i]), raw=True)

    def _preview_bundle(self, text: str) -> dict:
        """A slice while text arrives: markdown renders as it comes; other formats show as text."""
        from .frontend import answer_payload
        return {**answer_payload(self.fmt, "streaming"),
                ("text/markdown" if self.fmt == "markdown" else "text/plain"): text}

    def finish(self, gen=None) -> None:
        """End the live part; show the final render for rich formats."""
        self._done_waiting()
        if not self._rich:
            if self.text and not self.text.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
            return
        for handle, shown in zip(self._handles, self._shown):
            if shown:
                handle.update({}, raw=True)
        for _ in self._slices()[len(self._handles):]:  # unshown slices get one too: outputs follow the text
            self._handles.append(publish({}, display_id=True))
        if self.text:
            from .frontend import WARN, answer_payload, html_line
            bundle = render_bundle(self.text, self.fmt)
            if self.fmt == "json" and "application/json" not in bundle:
                msg = "⚠ -f json: the answer is not JSON; shown as text"
                publish({"text/plain": msg, "text/html": html_line(msg, WARN)})
            publish({**answer_payload(self.fmt, "done"), **bundle})
