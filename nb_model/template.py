"""`{name}` interpolation that leaves other braces (code, JSON) alone.

Only clear references are filled: `{name}`, `{name.attr}`, `{name[0]}`,
`{name['key']}`. `{{` and `}}` give literal braces. Anything else in braces
stays as written, so pasted JSON or code needs no escaping.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Mapping

from .errors import ConfigError

_REF = re.compile(
    r"\{\{|\}\}|\{(?P<ref>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[(?:-?\d+|'[^'\]]*'|\"[^\"\]]*\")\])*)\}"
)
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[([^\]]+)\]")


def _resolve(ref: str, namespace: Mapping[str, Any]) -> Any:
    name = re.match(r"[A-Za-z_]\w*", ref).group()
    if name not in namespace:
        raise ConfigError(f"unknown variable {{{name}}} in the prompt: define {name} first, "
                          f"or write {{{{{name}}}}} for literal braces")
    value = namespace[name]
    for attr, index in _STEP.findall(ref[len(name):]):
        try:
            value = getattr(value, attr) if attr else value[ast.literal_eval(index)]
        except (AttributeError, LookupError, TypeError) as exc:
            raise ConfigError(f"cannot fill {{{ref}}} in the prompt: {type(exc).__name__}: {exc}") from None
    return value


def fill(template: str, namespace: Mapping[str, Any]) -> str:
    """Fill clear `{references}` from `namespace`; raise one ConfigError line for unknown names."""
    def sub(m: re.Match) -> str:
        token = m.group()
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return str(_resolve(m.group("ref"), namespace))

    return _REF.sub(sub, template)


def references(template: str) -> list[str]:
    """The top-level names a template refers to."""
    return [re.match(r"[A-Za-z_]\w*", m.group("ref")).group()
            for m in _REF.finditer(template) if m.group("ref")]


def cell_prompt(cell: str, namespace: Mapping[str, Any] | None) -> str:
    """A cell body as a prompt: its leading and trailing line ends dropped, `{references}` filled from
    `namespace` (None: sent as written, e.g. with --no-interpolate)."""
    body = cell.strip("\n")
    return body if namespace is None else fill(body, namespace)
