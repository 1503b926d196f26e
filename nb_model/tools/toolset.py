"""`Tool` (a callable with its schema), the `tool` decorator, and tool sets: checked, named once, looked up
by name for `--tools`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError
from .schema import function_schema, resolved_hints

ATTR = "__nb_model_tool__"


@dataclass
class Tool:
    """A callable with its schema (the OpenAI `function` object)."""

    fn: Callable
    schema: dict
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.schema["name"]

    def wire(self) -> dict:
        """The entry of a chat request's `tools` list."""
        return {"type": "function", "function": self.schema}

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None,
         params: dict | None = None):
    """Mark a function as a tool, overriding what is derived from it: `name`, `description`, and `params`
    (parameter name -> description, or -> JSON schema; or a whole ``{"type": "object", "properties": ...}``).

        @nb_model.tool(description="Rows of the orders table matching a SQL WHERE clause.",
                       params={"where": "a SQLite condition, e.g. region = 'North'"})
        def orders(where: str) -> list: ...

    Used bare (``@nb_model.tool``) it only checks, at definition, that the schema can be derived. The
    function itself is returned unchanged (it stays callable as before)."""
    def mark(f: Callable) -> Callable:
        if not callable(f):
            raise ConfigError(f"nb_model.tool marks a function, got {type(f).__name__}")
        options = {"name": name, "description": description, "params": params}
        function_schema(f, **options)  # fail here, at definition, on what the schema cannot hold
        try:
            setattr(f, ATTR, options)
        except (AttributeError, TypeError):  # a builtin or a bound method: wrap it
            def wrapper(*a, **k):
                return f(*a, **k)
            wrapper.__name__, wrapper.__doc__ = getattr(f, "__name__", "tool"), f.__doc__
            wrapper.__signature__ = inspect.signature(f)
            setattr(wrapper, ATTR, options)
            return wrapper
        return f
    return mark(fn) if fn is not None else mark


def as_tool(obj: Any, label: str | None = None) -> Tool:
    """A `Tool` from a function (marked with `tool` or not) or a Tool; one-line ConfigError otherwise."""
    if isinstance(obj, Tool):
        return obj
    if not callable(obj) or isinstance(obj, type):
        what, kind = label or repr(obj)[:40], type(obj).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise ConfigError(f"{what} is {article} {kind}, not a function: --tools takes names of "
                          "functions defined in the notebook")
    options = getattr(obj, ATTR, None) or {}
    schema = function_schema(obj, **options)
    return Tool(obj, schema, resolved_hints(obj, schema["name"]))


def toolset(tools) -> list[Tool]:
    """Tools from a list of functions (or one function); names must be distinct."""
    if callable(tools) and not isinstance(tools, (list, tuple)):
        tools = [tools]
    if not isinstance(tools, (list, tuple)) or not tools:
        raise ConfigError("tools must be a non-empty list of functions, e.g. tools=[sales_by_region]")
    out = [as_tool(t) for t in tools]
    names = [t.name for t in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two tools are named {', '.join(twice)}: rename one with nb_model.tool(name=...)")
    return out


def from_names(spec: str, namespace: dict) -> list[Tool]:
    """Tools from `--tools a,b` looked up in the notebook's variables."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--tools needs function names, e.g. --tools sales_by_region,top_products")
    found = []
    for name in names:
        if name not in namespace:
            raise ConfigError(f"--tools: no function named {name!r} in the notebook (define it, or check the "
                              "spelling; names are comma-separated, no spaces)")
        found.append(as_tool(namespace[name], label=repr(name)))
    return toolset(found)
