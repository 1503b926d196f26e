"""Compare variants as a table: each variant's text side by side, its footer underneath (also the panel's
columns and status)."""
from __future__ import annotations

import html

from .footer import footer_line
from .frontend import ERROR, MUTED, NO_MATH, WARN


def text_html(text: str) -> str:
    return ('<div style="white-space:pre-wrap;word-break:break-word;text-align:left;line-height:1.45;font-family:'
            f'var(--jp-code-font-family,monospace);font-size:90%">{html.escape(text)}</div>')


def stats_html(gen, *, cap: int | None = None, error: str | None = None) -> str:
    """The footer line (model, tokens, ttft, total, cost, cached), warnings and an error, as HTML."""
    if error and not gen.text:
        return error_html(error)
    line, warnings = footer_line(gen, cap=cap)
    out = [f'<div class="{NO_MATH}" style="color:{MUTED};font-size:85%;line-height:1.4">{html.escape(line)}</div>']
    out += [f'<div class="{NO_MATH}" style="{WARN};font-size:85%;line-height:1.4">⚠ {html.escape(w)}</div>' for w in warnings]
    if error:
        out.append(error_html(error))
    return "".join(out)


def error_html(message: str) -> str:
    return f'<div class="{NO_MATH}" style="{ERROR};font-size:90%;line-height:1.4">⚠ {html.escape(message)}</div>'


def table_bundle(jobs: list) -> tuple[dict, dict]:
    """(MIME bundle, metadata) of the variants side by side; text/plain has no timings (nbval-stable)."""
    head = "".join(f'<th style="text-align:left">{html.escape(j.label)}</th>' for j in jobs)
    body = "".join(f'<td style="vertical-align:top;text-align:left">{text_html(j.text)}</td>' for j in jobs)
    stats = "".join(f'<td style="vertical-align:top;text-align:left">{stats_html(j.generation, cap=j.cap, error=j.error)}</td>'
                    for j in jobs)
    table = (f'<table class="nb-model-compare" style="table-layout:fixed;width:100%"><thead><tr>{head}</tr></thead>'
             f"<tbody><tr>{body}</tr><tr>{stats}</tr></tbody></table>")
    plain = []
    for j in jobs:
        g = j.generation
        plain += [f"== {j.label} ==", j.text.rstrip("\n"),
                  f"-- {g.model or g.profile} · {g.usage.label()} · "
                  f"finish: {g.finish_reason or '?'}" + (f" · error: {j.error}" if j.error else "")]
    meta = {"nb_model": {"compare": [{"label": j.label, **{k: v for k, v in j.generation.to_dict().items()
                                                          if k != "text"}} for j in jobs]}}
    return {"text/html": table, "text/plain": "\n".join(plain)}, meta


def muted_html(text: str) -> str:
    """A status line in the theme's muted colour."""
    return f'<span style="color:{MUTED}">{html.escape(text)}</span>'


def status_html(columns: list[tuple], *, compare: bool) -> str:
    """The panel's status under a run: the footer of its one column, or for compare the number of
    variants, the slowest one's time and the first failure. `columns`: (label, Generation, text, error, cap)."""
    if not compare:
        _, gen, _, error, cap = columns[0]
        return stats_html(gen, cap=cap, error=error)
    failed = [c for c in columns if c[3]]
    slowest = max((c[1].latency_s or 0 for c in columns), default=0)
    line = f'<div style="color:{MUTED};font-size:85%">{len(columns)} variants · {slowest:.2f} s</div>'
    return line + (error_html(f"{len(failed)} failed: {failed[0][3]}") if failed else "")
