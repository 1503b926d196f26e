"""`evaluate`: which prompt (or setting) is best over labelled data, and what it costs.

Variants take the forms of ``--compare``: a spec string (``"temperature=0.2,0.8"``,
``"prompt=A {text}|B {text}"``, ``"system=be brief|be exact"``), a list of prompt templates,
a list of settings dicts, or a dict naming either. Each variant runs over every row
through `generate_many` (rate limit, concurrency, cache per item), then a scorer gives
each output a number (see `scorers.py`).

The summary's 95% interval depends on what the scores are:

* every score 0 or 1 (``exact``, ``contains``, ``regex``, ``json_valid``, ``schema_valid``,
  ``length:N``, a function returning bools): the share of rows that pass is a proportion, and
  its interval is Wilson's score interval,
  (p + z²/2n ± z·√(p(1-p)/n + z²/4n²)) / (1 + z²/n) with z = 1.96 — it stays within 0..1
  and is not a zero-width point at 0% or 100% as the normal approximation would be;
* other scores: the normal approximation, mean ± z · s / √n with s the sample standard
  deviation (n - 1), clipped to the scorer's range when it has one (a judge's grades
  scaled to 0..1; ``Scorer.bounds``). A function's scores have no known range: not clipped.

Latencies are the p50 and p95 (linear interpolation) of the calls' total times.
Variants can pack rows (``pack=``, see `generate_many`): each row is still scored and
cached on its own, with its apportioned share of the pack's usage and cost.
"""
from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .scorers import Scorer, parse_score

Z95 = 1.959963984540054
MAX_VARIANTS = 26
SUMMARY_COLUMNS = ["variant", "n", "score", "ci_low", "ci_high", "errors", "tokens", "cost_usd",
                   "judge_cost_usd", "p50_latency_s", "p95_latency_s"]


def _variants(variants: Any, variables: list[str]) -> list[tuple[str, dict]]:
    """(label, settings) per variant."""
    from ..compare import label, parse_compare
    if isinstance(variants, str):
        found = parse_compare(variants, variables, min_variants=1, max_variants=MAX_VARIANTS)
        named = [(label(v), v) for v in found]
    elif isinstance(variants, Mapping):
        named = [(str(k), v if isinstance(v, Mapping) else {"prompt": v}) for k, v in variants.items()]
    elif isinstance(variants, (list, tuple)):
        named = []
        for n, v in enumerate(variants):
            settings = dict(v) if isinstance(v, Mapping) else {"prompt": v}
            named.append((label(settings) if isinstance(v, Mapping) else f"prompt {chr(65 + n)}", settings))
    else:
        raise ConfigError(f"variants must be a spec string like \"temperature=0.2,0.8\", a list of prompts or "
                          f"settings dicts, or a dict of them; got {type(variants).__name__}")
    if not 1 <= len(named) <= MAX_VARIANTS:
        raise ConfigError(f"evaluate takes 1 to {MAX_VARIANTS} variants, got {len(named)}")
    for name, settings in named:
        for key, value in settings.items():
            if key == "prompt" and not isinstance(value, str):
                raise ConfigError(f"variant {name}: a prompt must be a string, got {type(value).__name__}")
    seen: dict[str, int] = {}
    out = []
    for name, settings in named:  # equal labels (long prompts cut short) get a number
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name} #{seen[name]}", dict(settings)))
    return out


def _rows(data: Any) -> tuple[list[Mapping], list]:
    from ..batch.items import is_pandas, items_of
    items, index = items_of(data, "evaluate")
    if not items:
        raise ConfigError("evaluate: the data is empty; give a DataFrame or a list of rows")
    keys = list(index) if index is not None else list(range(len(items)))
    if is_pandas(data, "Series"):
        name = data.name or "item"
        return [{name: v, "item": v} for v in items], keys
    return [i if isinstance(i, Mapping) else {"item": i} for i in items], keys


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's and pandas' default)."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def wilson(passed: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion `passed` / `n`."""
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(scores: list[float], bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% interval over the scores that are not NaN: Wilson's when every
    score is 0 or 1, else the normal approximation clipped to `bounds` (see the module docstring)."""
    xs = [x for x in scores if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan, math.nan
    n = len(xs)
    mean = sum(xs) / n
    if all(x in (0.0, 1.0) for x in xs):
        return (mean, *wilson(sum(xs), n))
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return mean, low, high


class Evaluation:
    """What `evaluate` returns: `.rows` (one per variant and row), `.summary` (one per variant).

    In a notebook it shows as the summary table and a chart of score against cost."""

    def __init__(self, rows, summary, scorer: Scorer, generations: dict[str, list]) -> None:
        self.rows, self.summary, self.scorer, self.generations = rows, summary, scorer, generations

    def best(self) -> str:
        """The label of the variant with the highest mean score."""
        return str(self.summary.sort_values("score", ascending=False, kind="stable").iloc[0]["variant"])

    def table(self) -> str:
        """The summary as aligned text (latencies as 'N.NN s')."""
        from ..display.datasets import evaluation_text
        return evaluation_text(self)

    def __repr__(self) -> str:
        return self.table()

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(self.table())

    def chart_png(self) -> bytes | None:
        """Score (with its interval) against cost per variant, as PNG; None without matplotlib."""
        from ..display.datasets import evaluation_chart_png
        return evaluation_chart_png(self)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..display.datasets import evaluation_bundle
        return evaluation_bundle(self)

    def _ipython_display_(self) -> None:
        """The summary table, then the chart (when matplotlib is installed) as a second output."""
        from ..display.datasets import show_evaluation
        show_evaluation(self)


def _prompts(name: str, variant: dict, words: dict, template: str | None, rows: list[dict],
             namespace: Mapping | None) -> list[str]:
    """A variant's prompt for each row: its prompt in the template's {prompt} (or the whole prompt), filled
    from its {name} values, the row, then the namespace."""
    from ..template import fill

    prompt = variant.get("prompt")
    if template is None and prompt is None:
        raise ConfigError(f"variant {name}: no prompt; give template= or prompt variants")
    text = template if template is not None else "{prompt}"
    if prompt is not None:
        if "{prompt}" not in text:
            raise ConfigError("evaluate: the template has no {prompt} for the variants' prompts")
        text = text.replace("{prompt}", prompt)
    try:
        prompts = [fill(text, ChainMap(words, row, namespace or {})) for row in rows]
    except ConfigError as exc:
        raise ConfigError(f"variant {name}: {exc}") from None
    return prompts


def _summary_row(name: str, mine: list[dict], judge_cost: float, bounds: tuple[float, float] | None) -> dict:
    """A variant's line of the summary from its tidy rows (`bounds`: the scorer's range, see `summarize`)."""
    mean, low, high = summarize([r["score"] for r in mine], bounds)
    latencies = [r["latency_s"] for r in mine if r["latency_s"] is not None and not math.isnan(r["latency_s"])]
    return {"variant": name, "n": len(mine), "score": mean, "ci_low": low, "ci_high": high,
            "errors": sum(r["error"] is not None for r in mine),
            "tokens": sum(r["tokens_in"] + r["tokens_out"] for r in mine),
            "cost_usd": sum(r["cost_usd"] for r in mine), "judge_cost_usd": judge_cost,
            "p50_latency_s": _percentile(latencies, 0.5),
            "p95_latency_s": _percentile(latencies, 0.95)}


def evaluate(variants, data, score="exact:label", *, template: str | None = None, schema: Any = None,
             namespace: Mapping | None = None, profile: str | None = None, model: str | None = None,
             system: str | None = None, max_workers: int | None = None, cache: str = "use",
             progress: bool = True, max_retries: int | None = None, pack: int | str | None = None,
             **params) -> Evaluation:
    """Run each variant over every row of `data` and score the outputs.

    `data`: a DataFrame (its columns fill `{name}`s), a list of dicts, or a list/Series of
    texts (`{item}`). `template`: the prompt, with `{prompt}` where a variant's prompt goes
    (default: the variant's prompt is the whole template). `score`: a spec such as
    ``"exact:label"``, a function ``(output, row) -> float | bool``, or ``judge(rubric=…)``.
    ``seed`` is 0 unless given, so servers that honour it answer the same way each run;
    with the cache a re-run sends nothing. ``pack``: rows per request (an integer up to
    20, or "auto"), for the variants' calls and a judge's; each row is still scored,
    cached and costed on its own. Other keywords are `generate_many`'s (``max_workers``
    caps the requests in flight; by default they follow the rate limit and the latency).
    """
    import pandas as pd

    from ..batch import generate_many
    from ..params import SETTINGS, TEXTS
    from ..template import references

    rows, keys = _rows(data)
    scorer = parse_score(score, schema)
    columns = sorted({k for r in rows for k in r})
    missing = [c for c in scorer.columns if c not in columns]
    if missing:  # said before any request is sent
        raise ConfigError(f"score {scorer.name}: the data has no column {missing[0]!r} (columns: "
                          f"{', '.join(map(str, columns))})")
    named = _variants(variants, references(template or "") + columns)
    params.setdefault("seed", 0)
    context = {"max_workers": max_workers, "cache": cache, "progress": progress, "pack": pack}
    tidy, summary, generations = [], [], {}
    for name, variant in named:
        settings = {k: v for k, v in variant.items() if k in SETTINGS and k not in TEXTS}
        words = {k: v for k, v in variant.items() if k not in settings and k not in TEXTS}
        prompts = _prompts(name, variant, words, template, rows, namespace)
        gens = generate_many(prompts, max_workers, profile=settings.pop("profile", None) or profile,
                             model=settings.pop("model", None) or model,
                             system=variant.get("system", system), cache=cache, progress=progress,
                             max_retries=max_retries, pack=pack, **{**params, **settings})
        generations[name] = gens
        outputs = [g.text if g is not None and g.finish_reason != "error" else "" for g in gens]
        before = scorer.cost_usd
        scores = scorer.score_all(outputs, rows, context)
        judge_cost = scorer.cost_usd - before
        for key, gen, out, sc in zip(keys, gens, outputs, scores):
            failed = gen is None or gen.finish_reason == "error"
            tidy.append({"variant": name, "row": key, "output": out, "score": math.nan if failed else sc,
                         "tokens_in": gen.usage.prompt_tokens if gen else 0,
                         "tokens_out": gen.usage.completion_tokens if gen else 0,
                         "cost_usd": gen.cost_usd if gen else 0.0,
                         "latency_s": gen.latency_s if gen else math.nan,
                         "cached": bool(gen and gen.cached),
                         "error": (gen.error if gen else "not run") if failed else None})
        summary.append(_summary_row(name, tidy[-len(rows):], judge_cost, scorer.bounds))
    return Evaluation(pd.DataFrame(tidy), pd.DataFrame(summary, columns=SUMMARY_COLUMNS), scorer, generations)
