"""How the datasets front end shows: the summary line of `--schema` (one cell, or `--over` into a DataFrame)
and an evaluation's table and chart (score against cost)."""
from __future__ import annotations

import base64
import html
import io
import math

from ..textwidth import ljust, width


def extract_line(info: dict) -> str:
    """The line under an `--over … --schema` DataFrame (its `attrs["nb_model"]` figures)."""
    replay = f" · {info['cached']} of {info['calls']} calls from the cache (free)" if info["cached"] else ""
    return (f"— {info['rows']} rows · {info['ok']} ok · {info['repaired']} repaired · {info['retried']} "
            f"retried · {info['failed']} failed · {info['calls']} calls · ${info['cost_usd']:.4f}{replay}")


def show_record(result, record: dict) -> None:
    """One `--schema` answer as JSON, then a line: valid, repaired or retried, its tokens and cost."""
    import json

    from IPython.display import display

    shown = json.dumps(result, ensure_ascii=False, indent=1)
    display({"application/json": result, "text/plain": shown}, raw=True)
    gens = record["generations"]
    note = "repaired" if record["status"] == "repaired" else "retried once" if len(gens) > 1 else "valid"
    cached = sum(g.cached for g in gens)
    replay = f" · {cached} of {len(gens)} call{'s' * (len(gens) > 1)} from the cache (free)" if cached else ""
    print(f"— {note} · {sum(g.usage.total_tokens for g in gens)} tokens · "
          f"${sum(g.cost_usd for g in gens):.4f}{replay}")


def evaluation_text(ev) -> str:
    """An evaluation's summary as aligned text (latencies as 'N.NN s'), then its score line."""
    head = ["variant", "n", "score", "95% interval", "errors", "tokens", "cost", "p50", "p95"]
    lines = []
    for r in ev.summary.to_dict("records"):
        cost = r["cost_usd"] + r["judge_cost_usd"]
        lines.append([r["variant"], str(r["n"]), _f(r["score"], 3),
                      f"{_f(r['ci_low'], 3)} – {_f(r['ci_high'], 3)}", str(r["errors"]), str(r["tokens"]),
                      f"${cost:.4f}", f"{_f(r['p50_latency_s'], 2)} s", f"{_f(r['p95_latency_s'], 2)} s"])
    widths = [max(width(h), *(width(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(ljust(c, w) if i == 0 else " " * (w - width(c)) + c  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    judge = f" · judge cost included: ${ev.summary['judge_cost_usd'].sum():.4f}" \
        if ev.summary["judge_cost_usd"].sum() else ""
    cached = int(ev.rows["cached"].sum())
    replay = f" · {cached} of {len(ev.rows)} calls from the cache (free)" if cached else ""
    return "\n".join([fmt(head)] + [fmt(l) for l in lines] +
                     [f"score: {ev.scorer.name} · best: {ev.best()}{judge}{replay}"])


def evaluation_chart_png(ev) -> bytes | None:
    """An evaluation's score (with its interval) against cost per variant, as PNG; None without matplotlib."""
    try:  # the object API: no pyplot, the notebook's backend is left alone
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(5.2, 3.0), dpi=90)
    ax = fig.add_subplot()
    s = ev.summary
    cost = (s["cost_usd"] + s["judge_cost_usd"]).tolist()
    for x, y, lo, hi, name in zip(cost, s["score"], s["ci_low"], s["ci_high"], s["variant"]):
        err = [[y - lo], [hi - y]] if not (math.isnan(lo) or math.isnan(hi)) else None
        ax.errorbar([x], [y], yerr=err, fmt="o", capsize=4)
        ax.annotate(str(name)[:28], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("cost (USD)")
    ax.set_ylabel(f"mean score ({ev.scorer.name})"[:40])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def evaluation_bundle(ev) -> dict:
    """The summary table as text and as preformatted HTML."""
    table = html.escape(evaluation_text(ev))
    return {"text/plain": evaluation_text(ev), "text/html": f'<pre style="line-height:1.35">{table}</pre>'}


def show_evaluation(ev) -> None:
    """An evaluation: the summary table, then the chart (when matplotlib is installed) as a second output."""
    from IPython.display import display
    display(evaluation_bundle(ev), raw=True)
    png = evaluation_chart_png(ev)
    if png is not None:
        display({"image/png": base64.b64encode(png).decode(), "text/plain": "<chart: mean score against cost>"},
                 raw=True)


def _f(value: float, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
