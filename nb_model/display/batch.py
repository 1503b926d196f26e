"""How a batch shows: `generate_many`'s progress bar (a widget in a kernel, whose saved output ends as the
bar's final text) and the compact summary of `%%generate --over`."""
from __future__ import annotations

import sys

from ..textwidth import shorten
from .live import in_kernel
from .table import table

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def progress_bar(total: int, enabled: bool):
    """A tqdm bar: a widget in a Jupyter kernel (shown by us, see `end_progress`), text on stderr elsewhere."""
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


def end_progress(bar) -> None:
    """Close the bar; a widget bar's output becomes the widget plus the final bar as text, so a saved
    notebook reads "generate_many: 100%|…| 6/6 …" (widget state is not saved; the first text would stay)."""
    bar.close()
    handle = getattr(bar, "nb_model_display", None)
    if handle is not None:
        view = {"version_major": 2, "version_minor": 0, "model_id": bar.container.model_id}
        handle.update({WIDGET_MIME: view, "text/plain": str(bar)}, raw=True)


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


def show_over_summary(results, seconds: float, out: str | None) -> None:
    """The `--over` table (one short row per item) and its summary line."""
    rows, line = report_rows(results)
    table(rows)
    keep = f"stored in {out}" if out else "add --out VAR to keep the results"
    print(f"— {line} · {seconds:.1f} s · {keep}")
