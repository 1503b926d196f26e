"""Showing a generation in a notebook: live text, final render, one-line footer.

Text streams append-only to stdout (ipykernel batches it; O(n) bytes, and what
nbval records equals what the notebook saves). Rich formats (markdown, code,
json, html) show a live preview in one display that is re-sent at most 20
times a second and only once the text grew by half since the last preview (a
re-send costs the whole text, so this keeps the total to about 3x the text);
the preview is reset to empty at the end and followed by the final render, so
the saved notebook and nbval's recording agree.
"""
from __future__ import annotations

import html
import json
import re
import sys
import time

FORMATS = ("text", "markdown", "code", "json", "html")
MAX_UPDATES_PER_S = 20
PREVIEW_GROWTH = 1.5  # re-send the preview only when the text grew this much


def in_kernel() -> bool:
    """True inside a Jupyter kernel (display updates reach a frontend)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _publish(bundle: dict, metadata: dict | None = None, display_id=None, update=False):
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


class LiveOutput:
    """Receives deltas and shows them without flooding the frontend."""

    def __init__(self, fmt: str = "text") -> None:
        self.fmt = fmt
        self.text = ""
        self._kernel = in_kernel()
        self._rich = fmt != "text" and self._kernel
        self._handle = None
        self._last = 0.0
        self._shown = 0

    def write(self, delta: str) -> None:
        self.text += delta
        if not self._rich:
            sys.stdout.write(delta)
            if not self._kernel:
                sys.stdout.flush()
            return
        now = time.monotonic()
        if now - self._last >= 1 / MAX_UPDATES_PER_S and len(self.text) >= self._shown * PREVIEW_GROWTH:
            self._preview()
            self._last = now
            self._shown = len(self.text)

    def _preview(self) -> None:
        bundle = {"text/plain": self.text}
        if self._handle is None:  # first published empty: nbval records a handle's first bundle, and the
            self._handle = _publish({"text/plain": ""}, display_id=True)  # saved notebook ends it empty too
        self._handle.update(bundle, raw=True)

    def finish(self, gen=None) -> None:
        """End the live part; show the final render for rich formats."""
        if not self._rich:
            if self.text and not self.text.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
            return
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)
        if self.text:
            _publish(render_bundle(self.text, self.fmt))


def footer_line(gen, *, cap: int | None = None) -> tuple[str, list[str]]:
    """The one-line footer and any warning lines for a Generation."""
    u = gen.usage
    parts = [gen.model or gen.profile or "model", f"{u.prompt_tokens} → {u.completion_tokens} tokens"]
    if gen.ttft_s is not None:
        parts.append(f"first token {gen.ttft_s:.2f} s")
    if gen.latency_s is not None:
        parts.append(f"total {gen.latency_s:.2f} s")
    parts.append(f"finish: {gen.finish_reason or '?'}")
    if gen.cost_usd:  # a hit costs nothing: it shows what it saved
        parts.append(f"$0 (saved ${gen.cost_usd:.4f})" if gen.cached else f"${gen.cost_usd:.4f}")
    if gen.cached:
        parts.append("cached")
    warnings = []
    if gen.finish_reason == "length":
        limit, cap = gen.params.get("max_tokens"), cap or 2048
        if not limit:
            warnings.append(f"truncated at the server's default length: raise --max-tokens (cap {cap})")
        elif limit >= cap:
            warnings.append(f"truncated at max_tokens={limit}, the cap: ask for a shorter answer or continue "
                            "in a --chat")
        else:
            warnings.append(f"truncated at max_tokens={limit}: raise --max-tokens (cap {cap})")
    elif gen.finish_reason == "content_filter":
        warnings.append("the output was filtered by the server's content filter and is incomplete")
    elif gen.finish_reason == "interrupted":
        warnings.append("interrupted: partial text kept; re-run the cell to generate again")
    return " · ".join(parts), warnings


def show_footer(gen, *, cap: int | None = None) -> None:
    line, warnings = footer_line(gen, cap=cap)
    text = "\n".join([f"— {line}"] + [f"⚠ {w}" for w in warnings])
    html_lines = [f'<div style="color:#777;font-size:85%">— {html.escape(line)}</div>']
    html_lines += [f'<div style="color:#b36b00;font-size:85%">⚠ {html.escape(w)}</div>' for w in warnings]
    meta = {"nb_model": {
        "model": gen.model, "profile": gen.profile, "params": gen.params,
        "usage": {"prompt_tokens": gen.usage.prompt_tokens, "completion_tokens": gen.usage.completion_tokens},
        "finish_reason": gen.finish_reason, "cached": gen.cached, "request_id": gen.request_id,
    }}
    _publish({"text/plain": text, "text/html": "".join(html_lines)}, metadata=meta)


def show_notice(msg: str) -> None:
    _publish({"text/plain": msg, "text/html": f'<div style="color:#777;font-size:85%">{html.escape(msg)}</div>'})
