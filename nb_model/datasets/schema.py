"""Schemas for structured extraction: three ways to say it, one JSON Schema underneath.

* a dict of field -> type: ``{"sentiment": ["pos", "neg", "neu"], "price": float, "product": str}``
  (types: ``str``, ``int``, ``float``, ``bool``, a list of allowed values, or the names
  ``"str"``, ``"int"``, ``"float"``, ``"bool"``); every field is required, plain types may be null;
* a JSON Schema dict (``{"type": "object", "properties": …}``), used as given;
* a pydantic model class (pydantic is optional), through ``model_json_schema()``.

`parse_spec` reads the magic's ``--schema SPEC``: a variable holding one of the above,
inline JSON, or ``name:type, name:a|b|c``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..errors import ConfigError

TYPES = {str: "string", int: "integer", float: "number", bool: "boolean",
         "str": "string", "string": "string", "int": "integer", "integer": "integer",
         "float": "number", "number": "number", "bool": "boolean", "boolean": "boolean"}
EXAMPLE = 'sentiment:pos|neg|neu, price:float, product:str'
_SAMPLES = {"string": "…", "integer": 0, "number": 0.0, "boolean": False}


def _is_json_schema(obj: Mapping) -> bool:
    return "properties" in obj or obj.get("type") == "object" or "$schema" in obj


def _field(name: str, kind: Any) -> dict:
    if isinstance(kind, (list, tuple)):
        if not kind:
            raise ConfigError(f"schema: field {name!r} lists no allowed values")
        return {"enum": list(kind)}
    if isinstance(kind, Mapping):
        return to_json_schema(kind)
    try:
        json_type = TYPES[kind.lower() if isinstance(kind, str) else kind]
    except (KeyError, TypeError):
        raise ConfigError(f"schema: field {name!r} has type {kind!r}; use str, int, float, bool or a list of "
                          f"allowed values, e.g. {EXAMPLE}") from None
    return {"type": [json_type, "null"]}


def to_json_schema(spec: Any) -> dict:
    """The JSON Schema of `spec` (a field dict, a JSON Schema, or a pydantic model class)."""
    if isinstance(spec, type) and hasattr(spec, "model_json_schema"):
        return spec.model_json_schema()
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"schema must be a dict of field -> type, a JSON Schema or a pydantic model, got "
                          f"{type(spec).__name__}: e.g. {{'sentiment': ['pos', 'neg'], 'price': float}}")
    if _is_json_schema(spec):
        return dict(spec)
    for name in spec:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"schema: field names must be non-empty strings, got {name!r}")
    props = {name: _field(name, kind) for name, kind in spec.items()}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def fields(schema: dict) -> list[str]:
    """The top-level field names (the DataFrame's columns), in order."""
    return list((schema.get("properties") or {}).keys())


def example(schema: dict) -> dict:
    """A value of the schema's shape, for the prompt's instructions."""
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        sub = sub if isinstance(sub, dict) else {}
        if sub.get("enum"):
            out[name] = sub["enum"][0]
            continue
        kinds = sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")]
        kind = next((k for k in kinds if k and k != "null"), "string")
        out[name] = example(sub) if kind == "object" else [] if kind == "array" else _SAMPLES.get(kind, None)
    return out


def name_of(spec: Any) -> str:
    """A short name for `response_format` (letters, digits, _ and -)."""
    name = getattr(spec, "__name__", None) or (spec.get("title") if isinstance(spec, Mapping) else None) or "fields"
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in str(name))[:64] or "fields"


def parse_spec(text: str, namespace: Mapping[str, Any]) -> Any:
    """`--schema SPEC`: a variable's value, inline JSON, or ``name:type, name:a|b|c``."""
    text = (text or "").strip()
    if text.isidentifier() and text in namespace:
        return namespace[text]
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--schema: the JSON does not parse ({exc})") from None
    spec: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, colon, kind = (s.strip() for s in part.partition(":"))
        if not colon or not name.isidentifier() or not kind:
            raise ConfigError(f"--schema: cannot read {part!r}; write name:type (str, int, float, bool) or "
                              f"name:a|b|c, e.g. --schema \"{EXAMPLE}\", or name a variable holding a dict")
        spec[name] = [v.strip() for v in kind.split("|") if v.strip()] if "|" in kind else kind
    if not spec:
        raise ConfigError(f"--schema needs fields, e.g. --schema \"{EXAMPLE}\"")
    return spec
