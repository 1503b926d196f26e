"""`extract`: one prompt per input, answers parsed into DataFrame columns.

How a request asks for structure depends on the profile's protocol:

* ``openai`` (chat completions): ``response_format`` with the JSON Schema;
* ``seed`` and ``openai-completions`` (base models): instructions appended to the prompt,
  the schema and an example of its shape.

Each answer is parsed (strict JSON first; then the text between a code fence or the first
``{`` and the last ``}``; then `json_repair` for trailing commas, quotes and cut-off
text), validated with `jsonschema`, and an item that fails is asked once more with the
validation error in the prompt. An item that still fails is a row of missing values
with its reason in ``_error``; the batch never raises for one item.

Every call goes through `generate_many`: rate limit, in-flight window that follows the
server's latency, cache per item, progress bar, and packing (``pack=N`` or ``"auto"``:
several rows per request, each row's part of the answer parsed on its own; a row whose
part is missing is asked alone). Packing applies where the instructions travel in the
prompt (``seed``, ``openai-completions``, or ``structured="prompt"``): a ``response_format``
constrains the whole reply to one object of the schema, so a numbered list of answers
cannot come back; there ``pack="auto"`` sends one row per request and ``pack=N`` is refused.
A warm re-run replays both rounds from the cache and sends nothing, packed or not.
"""
from __future__ import annotations

import json
import re
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..batch.items import items_of
from ..errors import ConfigError
from .schema import example, fields, name_of, to_json_schema

INSTRUCTIONS = "Reply with only one JSON object, no other text, matching this JSON Schema:"
RETRY_NOTE = ("\n\nYour previous answer was not valid: {error}. Previous answer: {answer}\n"
              "Reply again with only the corrected JSON object.")
MODES = ("auto", "response_format", "prompt")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
INSTALL = "pip install 'nb_model[datasets]'"


def _libraries():
    try:
        import json_repair
        import jsonschema
    except ImportError as exc:
        raise ConfigError(f"structured extraction needs {exc.name}: {INSTALL}") from None
    return jsonschema, json_repair


@dataclass
class Parsed:
    """One answer read against the schema: `value` when valid, else `error` (one line)."""

    value: dict | None = None
    error: str | None = None
    repaired: bool = False


def parse_answer(text: str, validator) -> Parsed:
    """Parse `text` tolerantly and validate it; never raises."""
    _, json_repair = _libraries()
    text = (text or "").strip()
    repaired = False
    try:
        value = json.loads(text)
    except ValueError:
        repaired = True
        fence = _FENCE.search(text)
        inner = fence.group(1) if fence else text
        start, end = inner.find("{"), inner.rfind("}")
        candidate = inner[start:end + 1] if 0 <= start < end else inner[start:] if start >= 0 else inner
        try:
            value = json.loads(candidate)
        except ValueError:
            try:
                value = json_repair.loads(candidate)
            except Exception:  # noqa: BLE001 - whatever the repairer trips on, the answer is not JSON
                value = None
    if not isinstance(value, dict) or not value and not text.startswith("{"):
        return Parsed(error="the answer holds no JSON object", repaired=repaired)
    error = _first_error(validator, value)
    return Parsed(value=None if error else value, error=error, repaired=repaired)


def _first_error(validator, value) -> str | None:
    import jsonschema
    best = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if best is None:
        return None
    where = "/".join(str(p) for p in best.absolute_path)
    message = " ".join(best.message.split())
    message = message if len(message) <= 160 else message[:159] + "…"
    return f"{where}: {message}" if where else message


def validator_for(schema: dict):
    jsonschema, _ = _libraries()
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ConfigError(f"schema: not a valid JSON Schema: {' '.join(exc.message.split())[:160]}") from None
    return cls(schema)


def instructions(schema: dict) -> str:
    """The text appended to a prompt for servers without `response_format`."""
    return (f"\n\n{INSTRUCTIONS}\n{json.dumps(schema, ensure_ascii=False)}\n"
            f"For example: {json.dumps(example(schema), ensure_ascii=False)}")


def response_format(schema: dict, name: str) -> dict:
    strict = schema.get("additionalProperties") is False
    inner = {"name": name, "schema": schema, **({"strict": True} if strict else {})}
    return {"type": "json_schema", "json_schema": inner}


def _mode(mode: str, protocol: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"structured must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        return "response_format" if protocol == "openai" else "prompt"
    return mode




def fill(template: str | None, item: Any, namespace: Mapping | None) -> str:
    if template is None:
        if not isinstance(item, str):
            raise ConfigError(f"item is a {type(item).__name__}, not a text: pass template='...{{name}}...'")
        return item
    from ..template import fill as fill_template
    own = item if isinstance(item, Mapping) else {}
    return fill_template(template, ChainMap(own, {"item": item}, namespace or {}))


class Extraction:
    """The plumbing of one extraction: prompts, calls, parsing; `frame()` gives the DataFrame."""

    def __init__(self, schema: Any, *, profile: str | None, model: str | None, structured: str,
                 pack: int | str | None = None) -> None:
        from ..client import client_for
        self.spec = schema
        self.schema = to_json_schema(schema)
        self.validator = validator_for(self.schema)
        self.columns = fields(self.schema) or ["answer"]
        protocol = client_for(profile, model=model).profile.protocol
        self.mode = _mode(structured, protocol)
        self.extra = {"response_format": response_format(self.schema, name_of(schema))} \
            if self.mode == "response_format" else {}
        if self.mode == "response_format" and pack not in (None, 1, "auto"):
            raise ConfigError(f"pack={pack!r} needs the schema in the prompt: with response_format the reply is one "
                              "object, not a list of answers; pass structured=\"prompt\" to pack, or drop pack")
        self.pack = pack if self.mode == "prompt" else None

    def prompt(self, text: str) -> str:
        return text + instructions(self.schema) if self.mode == "prompt" else text

    def run(self, prompts: list[str], call: Mapping[str, Any]) -> list[dict]:
        """One record per prompt: value, error, status, generations."""
        from ..batch import generate_many
        params = {**call, **self.extra, "pack": self.pack}
        first = generate_many([self.prompt(p) for p in prompts], **params)
        records = [self._record(g) for g in first]
        again = [i for i, r in enumerate(records) if r["status"] == "invalid"]
        if again:
            retry = [self.prompt(prompts[i] + RETRY_NOTE.format(error=records[i]["error"],
                                                                 answer=_short(records[i]["raw"])))
                     for i in again]
            for i, gen in zip(again, generate_many(retry, **params)):
                second = self._record(gen)
                second["generations"] = records[i]["generations"] + second["generations"]
                second["status"] = "retried" if second["status"] in ("ok", "repaired") else "failed"
                records[i] = second
        for r in records:
            if r["status"] == "invalid":
                r["status"] = "failed"
        return records

    def _record(self, gen) -> dict:
        if gen is None:
            return {"value": None, "error": "not run (interrupted)", "status": "failed", "raw": "",
                    "generations": []}
        if gen.finish_reason == "error":
            return {"value": None, "error": gen.error, "status": "failed", "raw": gen.text, "generations": [gen]}
        parsed = parse_answer(gen.text, self.validator)
        status = "invalid" if parsed.error else "repaired" if parsed.repaired else "ok"
        return {"value": parsed.value, "error": parsed.error, "status": status, "raw": gen.text,
                "generations": [gen]}

    def frame(self, records: list[dict], index: Any, details: bool):
        import pandas as pd
        rows = []
        for r in records:
            value = r["value"] if isinstance(r["value"], dict) else {}
            row = {c: value.get(c) for c in self.columns}
            row["_error"] = None if r["value"] is not None else (r["error"] or "no answer")
            if details:
                gens = r["generations"]
                row.update(_status=r["status"], _raw=r["raw"], _calls=len(gens),
                           _tokens=sum(g.usage.total_tokens for g in gens),
                           _cost_usd=sum(g.cost_usd for g in gens))
            rows.append(row)
        df = pd.DataFrame(rows, index=index)
        gens = [g for r in records for g in r["generations"]]
        statuses = [r["status"] for r in records]
        df.attrs["nb_model"] = {
            "rows": len(records), "ok": statuses.count("ok"), "repaired": statuses.count("repaired"),
            "retried": statuses.count("retried"), "failed": statuses.count("failed"),
            "calls": len(gens), "cached": sum(g.cached for g in gens),
            "tokens": sum(g.usage.total_tokens for g in gens), "cost_usd": sum(g.cost_usd for g in gens),
            "mode": self.mode,
        }
        return df


def _short(text: str, width: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def extract(texts, schema, *, template: str | None = None, namespace: Mapping | None = None,
            profile: str | None = None, model: str | None = None, system: str | None = None,
            structured: str = "auto", details: bool = False, max_workers: int | None = None,
            cache: str = "use", progress: bool = True, max_retries: int | None = None,
            pack: int | str | None = None, **params):
    """Extract `schema`'s fields from each text into a pandas DataFrame.

    `texts`: a list or Series of texts, or a DataFrame whose rows fill `template`'s
    `{column}`s (any item is also `{item}`). `schema`: a dict of field -> type
    (``{"sentiment": ["pos", "neg"], "price": float, "product": str}``), a JSON Schema,
    or a pydantic model class. One row per input (a Series' or DataFrame's index is
    kept), one column per field, plus ``_error`` (None, or why the row is empty).
    ``structured``: "auto" (response_format for the openai protocol, else instructions
    in the prompt), "response_format" or "prompt". ``details=True`` adds ``_status``
    (ok / repaired / retried / failed), ``_raw``, ``_calls``, ``_tokens``, ``_cost_usd``.
    Counts for the whole run are in ``df.attrs["nb_model"]``. ``pack``: rows per request
    (an integer up to 20, or "auto"), in prompt mode only (see the module's docstring).
    Other keywords are `generate_many`'s (``max_workers``: a cap on requests in flight,
    by default as many as the rate limit and the observed latency call for; ``cache``,
    ``progress``, generation parameters).
    """
    run = Extraction(schema, profile=profile, model=model, structured=structured, pack=pack)
    items, index = items_of(texts, "extract")
    if items and template is None and not all(isinstance(i, str) for i in items):
        raise ConfigError("extract: the items are not texts: pass template='...{column}...' to build each prompt")
    prompts = [fill(template, item, namespace) for item in items]
    call = dict(max_workers=max_workers, profile=profile, model=model, system=system, cache=cache,
                progress=progress, max_retries=max_retries, errors="collect", **params)
    records = run.run(prompts, call) if prompts else []
    return run.frame(records, index, details)


def extract_one(prompt: str, schema, **kw) -> tuple[dict | None, dict]:
    """(the value or None, the record) for one prompt (the magic's `--schema`)."""
    run = Extraction(schema, profile=kw.get("profile"), model=kw.get("model"),
                     structured=kw.pop("structured", "auto"))
    record = run.run([prompt], {"progress": False, **kw, "max_workers": 1, "errors": "collect"})[0]
    return record["value"], record
