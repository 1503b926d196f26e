"""What the kernel tells nb_model's JupyterLab extension, and the plain fallbacks everyone else sees.

Outputs carry `application/vnd.nb-model.generation+json` next to their usual `text/plain`,
`text/markdown` or `text/html`: a small dict saying what the output is (`kind`: waiting, answer,
footer) and, for answers, the format and state. An answer's text travels once, in the standard
fallback, which the extension's renderer reads; frontends without the extension (classic, VS Code,
GitHub, nbconvert) render the fallback as before. The payload of an answer depends only on the
format and state, so reruns store the same outputs; a footer's payload holds timings (nbval skips
this type: everything in it is also in the footer's text).

`insert_cell` asks the extension (comm target `nb_model`) to add a cell below the active one.
"""
from __future__ import annotations

import html
import time

MIME = "application/vnd.nb-model.generation+json"
COMM_TARGET = "nb_model"
NO_MATH = "tex2jax_ignore mathjax_ignore"  # classes MathJax 2 and 3 leave alone: "$0 … $0.0004" stays text

# theme variables of JupyterLab and Notebook 7, each with a fallback for frontends without them.
# The themes' orange and red read poorly as text on one of light or dark backgrounds, so warnings
# and errors are body-coloured text marked by a coloured rule (errors also on the error background).
MUTED = "var(--jp-ui-font-color2, #616161)"  # a colour
WARN = "color:var(--jp-ui-font-color1, #212121);border-left:3px solid var(--jp-warn-color1, #ff9800);padding-left:6px"
ERROR = ("color:var(--jp-content-font-color1, #212121);background:var(--jp-rendermime-error-background, #fdd);"
         "border-left:3px solid var(--jp-error-color1, #f44336);padding-left:6px")


def waiting_bundle() -> dict:
    return {MIME: {"kind": "waiting"}, "text/plain": "generating…",
            "text/html": html_line("generating…", f"color:{MUTED}")}


def answer_payload(fmt: str, state: str) -> dict:
    return {MIME: {"kind": "answer", "format": fmt, "state": state}}


def footer_payload(gen, warnings: list[str], note: str | None = None) -> dict:
    u = gen.usage
    return {"kind": "footer", "model": gen.model or gen.profile or "model", "tokens": u.label(), "note": note,
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "ttft_s": gen.ttft_s, "latency_s": gen.latency_s, "finish_reason": gen.finish_reason,
            "cost_usd": gen.cost_usd or 0, "cached": bool(gen.cached), "warnings": list(warnings)}


def html_line(text: str, style: str, size: str = "85%") -> str:
    """One line of HTML in theme colours (`style`: MUTED's colour, WARN or ERROR) that maths renderers
    leave as it is."""
    return f'<div class="{NO_MATH}" style="{style};font-size:{size}">{html.escape(text)}</div>'


def insert_cell(text: str, cell_type: str = "code", *, on_done=None, on_missing=None):
    """Ask the frontend extension to add a cell below the active one.

    `on_done()` runs when the extension says it inserted the cell; `on_missing()` when the frontend
    closes the request unanswered (no extension: JupyterLab and Notebook close unknown comm targets).
    Returns the comm, or None outside a kernel.
    """
    try:
        from comm import create_comm
    except ImportError:  # older ipykernel
        return None
    state = {"done": False}

    def answered(msg):
        if (msg.get("content", {}).get("data") or {}).get("inserted"):
            state["done"] = True
            if on_done:
                on_done()

    def closed(msg):
        if not state["done"] and on_missing:
            on_missing()

    comm = create_comm(target_name=COMM_TARGET, data={"action": "insert-cell", "text": text,
                                                      "cell_type": cell_type})
    comm.on_msg(answered)
    comm.on_close(closed)
    return comm


class LiveColumns:
    """Compare variants shown side by side while they stream (in a kernel): one display, updated
    when the texts have grown by half since the last update (at most every `interval` s), so the
    bytes sent stay a small multiple of the texts. Emptied at the end, when the table replaces it.
    """

    GROWTH = 1.5

    def __init__(self, jobs, interval: float = 0.5) -> None:
        from IPython.display import display
        self.jobs, self.interval = jobs, interval
        self._handle = display({}, raw=True, display_id=True)  # empty first: nbval records a first bundle
        self._sent_chars, self._sent_at = 0, 0.0

    def bundle(self) -> dict:
        columns = [{"label": j.label, "text": j.text, "state": "done" if j.done.is_set() else "streaming"}
                   for j in self.jobs]
        plain = "\n".join(f"== {c['label']} ==\n{c['text']}" for c in columns)
        return {MIME: {"kind": "compare", "state": "streaming", "columns": columns}, "text/plain": plain}

    def tick(self) -> None:
        chars, now = sum(len(j.text) for j in self.jobs), time.monotonic()
        if chars and chars >= self.GROWTH * self._sent_chars and now - self._sent_at >= self.interval:
            self._handle.update(self.bundle(), raw=True)
            self._sent_chars, self._sent_at = chars, now

    def finish(self) -> None:
        if self._sent_chars:
            self._handle.update({}, raw=True)
