"""Scorers for `evaluate`: a number per (output, row), higher is better.

Given as the magic's string spec, or as Python:

==================  =======================================================================
``exact:COL``       1 when the output equals column COL (trimmed, case and end punctuation
                    ignored), else 0
``contains:COL``    1 when the output contains COL's value (case ignored)
``regex:PATTERN``   1 when the pattern is found in the output
``json_valid``      1 when the output parses as JSON (a code fence around it is fine)
``schema_valid``    1 when it parses and matches the schema given to `evaluate(schema=…)`
``length``          the output's length in tokens; ``length:N``: 1 when at most N tokens
a function          ``fn(output, row) -> float | bool``
``judge(…)``        a model grades each output against a rubric (its cost counted apart)
==================  =======================================================================
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Mapping

from ..errors import ConfigError

SPECS = "exact:COL, contains:COL, regex:PATTERN, json_valid, schema_valid, length[:N]"
_END = " \t\n.!?。！？\"'`"
UNIT = (0.0, 1.0)


class Scorer:
    """Scores a whole column of outputs; `cost_usd` and `tokens` are what scoring itself spent."""

    name = "score"
    bounds: tuple[float, float] | None = None  # the range of the scores, when known (the interval is clipped)
    columns: tuple[str, ...] = ()  # the data's columns the scorer reads (checked before anything is sent)

    def __init__(self) -> None:
        self.cost_usd = 0.0
        self.tokens = 0

    def score_all(self, outputs: list[str], rows: list[Mapping], context: Mapping[str, Any]) -> list[float]:
        raise NotImplementedError


class _PerItem(Scorer):
    def __init__(self, name: str, fn: Callable[[str, Mapping], Any],
                 bounds: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.name, self.fn, self.bounds = name, fn, bounds

    def score_all(self, outputs, rows, context):
        out = []
        for text, row in zip(outputs, rows):
            value = self.fn(text, row)
            if isinstance(value, bool) or value is None:
                value = float(bool(value))
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                raise ConfigError(f"scorer {self.name} returned {value!r}; a scorer returns a number or a bool") \
                    from None
        return out


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).strip(_END).casefold()


def _column(row: Mapping, col: str, spec: str) -> Any:
    if col not in row:
        raise ConfigError(f"score {spec}: the data has no column {col!r} (columns: {', '.join(map(str, row))})")
    return row[col]


def _json_text(text: str) -> Any:
    text = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.DOTALL)
    return json.loads(fence.group(1) if fence else text)


def parse_score(spec: Any, schema: Any = None) -> Scorer:
    """A Scorer from a string spec, a function or a Scorer."""
    if isinstance(spec, Scorer):
        return spec
    if callable(spec):
        return _PerItem(getattr(spec, "__name__", "score"), spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"score must be one of {SPECS}, a function (output, row) -> number, or judge(...)")
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("exact", "contains") and arg.strip():
        col = arg.strip()
        if kind == "exact":
            scorer = _PerItem(spec, lambda out, row: _norm(out) == _norm(_column(row, col, spec)), UNIT)
        else:
            scorer = _PerItem(spec, lambda out, row: _norm(_column(row, col, spec)) in _norm(out), UNIT)
        scorer.columns = (col,)
        return scorer
    if kind == "regex" and arg:
        try:
            pattern = re.compile(arg)
        except re.error as exc:
            raise ConfigError(f"score {spec}: the pattern does not compile ({exc})") from None
        return _PerItem(spec, lambda out, row: pattern.search(out or "") is not None, UNIT)
    if kind == "json_valid" and not arg:
        return _PerItem(spec, _parses, UNIT)
    if kind == "schema_valid" and not arg:
        if schema is None:
            raise ConfigError("score schema_valid needs the schema: evaluate(..., schema=...) or --schema SPEC")
        from .extract import validator_for
        from .schema import to_json_schema
        validator = validator_for(to_json_schema(schema))
        return _PerItem(spec, lambda out, row: _valid(out, validator), UNIT)
    if kind == "length":
        from ..tokens import estimate_tokens
        if not arg:
            return _PerItem(spec, lambda out, row: estimate_tokens(out or ""))
        if arg.strip().isdigit():
            most = int(arg)
            return _PerItem(spec, lambda out, row: estimate_tokens(out or "") <= most, UNIT)
    raise ConfigError(f"unknown score {spec!r}: use one of {SPECS}, e.g. exact:label")


def _parses(text: str, row=None) -> bool:
    try:
        _json_text(text)
        return True
    except ValueError:
        return False


def _valid(text: str, validator) -> bool:
    try:
        value = _json_text(text)
    except ValueError:
        return False
    return validator.is_valid(value)


JUDGE_TEMPLATE = ("Grade an answer against a rubric.\n\nRubric: {rubric}\n\nThe task's data: {data}\n\n"
                  "The answer to grade:\n{output}\n\nGive a score from {low} (fails the rubric) to {high} "
                  "(fully meets it) and one short reason.")


class Judge(Scorer):
    """A model grades each output from `low` to `high`; the score is scaled to 0..1.

    The grades are asked as structured output (`extract`), so they are parsed,
    validated and retried like any extraction, and cached like any call.
    """

    def __init__(self, rubric: str, *, profile: str | None = None, model: str | None = None,
                 low: int = 1, high: int = 5, template: str = JUDGE_TEMPLATE, **params) -> None:
        super().__init__()
        if not isinstance(rubric, str) or not rubric.strip():
            raise ConfigError("judge needs a rubric, e.g. judge(rubric='The answer names the sentiment correctly')")
        if not (isinstance(low, int) and isinstance(high, int) and low < high):
            raise ConfigError(f"judge: low and high must be integers with low < high, got {low!r}, {high!r}")
        self.rubric, self.profile, self.model, self.low, self.high = rubric, profile, model, low, high
        self.template, self.params = template, params
        self.name = f"judge({_short(rubric)})"
        self.bounds = UNIT

    def schema(self) -> dict:
        return {"type": "object", "additionalProperties": False, "required": ["score", "reason"],
                "properties": {"score": {"type": "integer", "minimum": self.low, "maximum": self.high},
                               "reason": {"type": "string"}}}

    def score_all(self, outputs, rows, context):
        from .extract import extract
        items = [{"output": o, "data": json.dumps({k: str(v) for k, v in row.items()}, ensure_ascii=False),
                  "rubric": self.rubric, "low": self.low, "high": self.high} for o, row in zip(outputs, rows)]
        kw = {k: v for k, v in context.items() if k in ("max_workers", "cache", "progress", "pack")}
        if kw.get("pack") not in (None, "auto") and self.params.get("structured", "auto") == "auto":
            from ..client import client_for
            if client_for(self.profile, model=self.model).profile.protocol == "openai":
                kw["pack"] = None  # the judge answers through response_format, one grade per request
        df = extract(items, self.schema(), template=self.template, profile=self.profile, model=self.model,
                     **{**kw, **self.params})
        info = df.attrs["nb_model"]
        self.cost_usd += info["cost_usd"]
        self.tokens += info["tokens"]
        span = self.high - self.low
        return [(float(s) - self.low) / span if s is not None and not _nan(s) else math.nan for s in df["score"]]


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _short(text: str, width: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def judge(rubric: str, *, profile: str | None = None, model: str | None = None, low: int = 1, high: int = 5,
          **params) -> Judge:
    """A scorer where a model (`profile`, `model`) grades each output against `rubric`."""
    return Judge(rubric, profile=profile, model=model, low=low, high=high, **params)
