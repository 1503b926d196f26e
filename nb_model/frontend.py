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

MIME = "application/vnd.nb-model.generation+json"
COMM_TARGET = "nb_model"
NO_MATH = "tex2jax_ignore mathjax_ignore"  # classes MathJax 2 and 3 leave alone: "$0 … $0.0004" stays text

# theme variables of JupyterLab and Notebook 7, each with a fallback for frontends without them
MUTED = "var(--jp-ui-font-color2, #616161)"
WARN = "var(--jp-warn-color0, #8a5300)"
ERROR = "var(--jp-error-color0, #b00020)"


def waiting_bundle() -> dict:
    return {MIME: {"kind": "waiting"}, "text/plain": "generating…",
            "text/html": html_line("generating…", MUTED)}


def answer_payload(fmt: str, state: str) -> dict:
    return {MIME: {"kind": "answer", "format": fmt, "state": state}}


def footer_payload(gen, warnings: list[str]) -> dict:
    u = gen.usage
    return {"kind": "footer", "model": gen.model or gen.profile or "model",
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "ttft_s": gen.ttft_s, "latency_s": gen.latency_s, "finish_reason": gen.finish_reason,
            "cost_usd": gen.cost_usd or 0, "cached": bool(gen.cached), "warnings": list(warnings)}


def html_line(text: str, color: str, size: str = "85%") -> str:
    """One line of HTML in a theme colour that maths renderers leave as it is."""
    return f'<div class="{NO_MATH}" style="color:{color};font-size:{size}">{html.escape(text)}</div>'


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
