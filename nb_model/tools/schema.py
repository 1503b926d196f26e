"""JSON schemas of Python functions, and the checks of the arguments a model sends.

Derived from the signature, the type hints and the docstring: ``str``, ``int``,
``float``, ``bool``, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Optional[X]`` / ``X | None``, ``Any`` or no hint (any JSON
value), and pydantic models where pydantic is installed. A parameter with a
default is optional. The description is the docstring's first paragraph; a
parameter's comes from a Google-style ``Args:`` section or a ``:param x:`` line.
`nb_model.tool` overrides any of it.

Hand-written rather than taken from pydantic's ``validate_call``: pydantic is
an optional dependency here, and its schemas of plain functions need a model
class per function; this covers the types a notebook function takes in a few
lines and names an unsupported one in one line.
"""
from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from typing import Any, Callable

from ..errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI-compatible servers accept as a tool name
SUPPORTED = "str, int, float, bool, Literal, list, tuple, dict, Optional, Any or a pydantic model"
_PRIMITIVE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARGS_HEAD = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:?\s*$")
_SPHINX = re.compile(r"^\s*:param\s+(?:[^:]+\s)?(\w+)\s*:\s*(.+)$")


class UnsupportedType(ConfigError):
    """A parameter whose type has no JSON schema here."""


def _pydantic_model(tp) -> bool:
    """True for a pydantic model class (pydantic is never imported here: a model means it already is)."""
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return base is not None and isinstance(tp, type) and issubclass(tp, base)


def type_schema(tp, where: str) -> dict:
    """The JSON schema of a type hint; `UnsupportedType` (one line, naming `where`) if there is none."""
    if tp is inspect.Parameter.empty or tp is Any or tp is object:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if tp in _PRIMITIVE:
        return {"type": _PRIMITIVE[tp]}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        values = list(args)
        kinds = {_PRIMITIVE.get(type(v)) for v in values}
        if None in kinds:
            raise UnsupportedType(f"{where}: Literal values must be str, int, float or bool")
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        inner = type_schema(options[0], where) if len(options) == 1 else \
            {"anyOf": [type_schema(a, where) for a in options]}
        if len(options) == len(args):
            return inner
        if isinstance(inner.get("type"), str) and "enum" not in inner:
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if tp in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, typing.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [type_schema(a, where) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        item = type_schema(args[0], where) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if tp is dict or origin in (dict, typing.Mapping):
        if args and args[0] is not str:
            raise UnsupportedType(f"{where}: a dict's keys must be str (JSON object keys are strings)")
        value = type_schema(args[1], where) if args else {}
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    if _pydantic_model(tp):
        return tp.model_json_schema()
    name = getattr(tp, "__name__", None) or str(tp)
    raise UnsupportedType(f"{where} has type {name}, which has no JSON schema: use {SUPPORTED} "
                          "(or describe it with nb_model.tool(params=...))")


def _doc_parts(doc: str | None) -> tuple[str, dict[str, str]]:
    """(the docstring's first paragraph as one line, {parameter: its description})."""
    text = inspect.cleandoc(doc or "")
    description = " ".join(text.split("\n\n", 1)[0].split())
    params: dict[str, str] = {}
    in_args, current, indent = False, None, None
    for line in text.splitlines():
        sphinx = _SPHINX.match(line)
        if sphinx:
            params[sphinx.group(1)] = sphinx.group(2).strip()
            continue
        if _ARGS_HEAD.match(line):
            in_args, current, indent = True, None, None
            continue
        if not in_args:
            continue
        if not line.strip():
            continue
        lead = len(line) - len(line.lstrip())
        if indent is None:
            indent = lead
        if lead < indent or (lead == 0 and line.rstrip().endswith(":")):
            in_args = False  # the next section (Returns:, ...)
            continue
        match = re.match(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
        if lead == indent and match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current:
            params[current] = (params[current] + " " + line.strip()).strip()
    return description, params


def resolved_hints(fn: Callable, name: str) -> dict[str, Any]:
    """The type hints of `fn`, string annotations (``from __future__ import annotations``) resolved in its
    module; one line naming a parameter whose hint cannot be resolved."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - find the parameter at fault
        pass
    hints = {}
    for pname, hint in getattr(fn, "__annotations__", {}).items():
        if isinstance(hint, str):
            try:
                hint = eval(hint, dict(getattr(fn, "__globals__", {})))  # noqa: S307 - the function's own text
            except Exception:  # noqa: BLE001
                raise ConfigError(f"tool {name}: the type {hint!r} of {pname} cannot be resolved (a class defined "
                                  "inside a function?): define it at the top level") from None
        hints[pname] = hint
    return hints


def function_schema(fn: Callable, *, name: str | None = None, description: str | None = None,
                    params: dict | None = None) -> dict:
    """The OpenAI `function` object of `fn`: {"name", "description", "parameters"}."""
    name = name or getattr(fn, "__name__", "")
    if not NAME.match(name or ""):
        raise ConfigError(f"tool name {name!r} is not usable: a tool name is 1-64 letters, digits, '_' or '-' "
                          "(name it with nb_model.tool(name=...))")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise ConfigError(f"tool {name}: cannot read its signature; wrap it in a def with named parameters") \
            from None
    hints = resolved_hints(fn, name)
    doc_description, doc_params = _doc_parts(inspect.getdoc(fn))
    given = dict(params or {})
    if "properties" in given:  # a whole parameters schema, as is
        parameters = given
    else:
        properties, required = {}, []
        for pname, param in signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue  # *args / **kwargs: nothing a model can name
            if param.kind is param.POSITIONAL_ONLY:
                raise ConfigError(f"tool {name}: parameter {pname} is positional-only; a model passes "
                                  "arguments by name")
            if pname in given:
                entry = given.pop(pname)
                schema = {"description": entry} if isinstance(entry, str) else dict(entry)
                if isinstance(entry, str):
                    schema = {**type_schema(hints.get(pname, param.annotation),
                                            f"tool {name}: parameter {pname}"), **schema}
            else:
                schema = type_schema(hints.get(pname, param.annotation), f"tool {name}: parameter {pname}")
                if pname in doc_params and "description" not in schema:
                    schema = {**schema, "description": doc_params[pname]}
            if param.default is param.empty:
                required.append(pname)
            properties[pname] = schema
        if given:
            raise ConfigError(f"tool {name}: params names {', '.join(sorted(given))}, which "
                              f"{'is not a parameter' if len(given) == 1 else 'are not parameters'} of it")
        parameters = {"type": "object", "properties": properties, "required": required}
    return {"name": name, "description": description or doc_description or f"The Python function {name}.",
            "parameters": parameters}


# -- checking what a model sends --------------------------------------------------

def _is(value, kind: str) -> bool:
    return {"string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)
            or isinstance(v, float) and v.is_integer(),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "array": lambda v: isinstance(v, list),
            "object": lambda v: isinstance(v, dict),
            "null": lambda v: v is None}.get(kind, lambda v: True)(value)


def check_value(value, schema: dict, where: str) -> str | None:
    """A one-line reason why `value` does not fit `schema` (the subset built above), else None."""
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {', '.join(map(repr, schema['enum']))}, got {value!r}"
    if "anyOf" in schema:
        if all(check_value(value, option, where) for option in schema["anyOf"]):
            return f"{where} has the wrong type ({type(value).__name__})"
        return None
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_is(value, k) for k in kinds):
        return f"{where} must be {' or '.join(kinds)}, got {type(value).__name__} {value!r:.60}"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if (reason := check_value(item, schema["items"], f"{where}[{i}]")):
                return reason
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            if (reason := check_value(item, schema["additionalProperties"], f"{where}[{key!r}]")):
                return reason
    return None


def convert(value, tp):
    """`value` (JSON) as the Python type the function asked for: pydantic models, tuples, whole floats for
    int parameters; anything else as is."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        return value if value is None or len(options) != 1 else convert(value, options[0])
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    if _pydantic_model(tp) and isinstance(value, dict):
        return tp.model_validate(value)
    return value
