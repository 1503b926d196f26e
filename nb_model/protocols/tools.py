"""Tool calls on the wire; no I/O here.

* `ToolCallAssembler` puts OpenAI chat `tool_calls` back together: a stream sends
  each call in deltas (``index`` first with ``id`` and ``function.name``, then
  ``function.arguments`` in pieces that may split anywhere, also inside a string
  or an escape), several calls interleaved by ``index``; a whole reply sends them
  complete.
* The emulation convention, for protocols without a tool wire (the seed API,
  plain completions): the tools are listed in the system text, one JSON object a
  line; the model calls one by replying with exactly one JSON object
  ``{"tool": NAME, "arguments": {...}}``; each result goes back as a ``Tool:``
  turn holding ``{"tool": NAME, "result": ...}`` (or ``"error"``). Anything
  else the model writes is its answer.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..errors import ProtocolError

EMULATION_HEAD = "You can call these tools. One tool per line, as JSON (name, description, parameters):"
EMULATION_RULE = ('To call a tool, reply with exactly one JSON object and nothing else: '
                  '{"tool": "<name>", "arguments": {<parameter>: <value>}}. After a tool result, call '
                  'another tool or answer the user in plain text.')
_FENCED = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


class ToolCallAssembler:
    """Feed `tool_calls` lists (deltas or whole calls); `calls()` is the calls so far, in index order."""

    def __init__(self) -> None:
        self._slots: dict[int, dict] = {}
        self._last: int | None = None

    def feed(self, deltas: list, *, whole: bool = False) -> None:
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                raise ProtocolError("a tool call is not a JSON object")
            index = delta.get("index")
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                if whole:
                    index = position
                elif delta.get("id") or self._last is None:  # no index: a new id opens a new call
                    index = (max(self._slots) + 1) if self._slots else 0
                else:
                    index = self._last
            slot = self._slots.setdefault(index, {"id": None, "name": "", "arguments": ""})
            self._last = index
            if isinstance(delta.get("id"), str) and delta["id"]:
                slot["id"] = delta["id"]
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                raise ProtocolError("a tool call's function is not a JSON object")
            name, arguments = function.get("name"), function.get("arguments")
            if name is not None:
                if not isinstance(name, str):
                    raise ProtocolError("a tool call's function name is not a string")
                if whole or not slot["name"]:
                    slot["name"] = name
                elif name != slot["name"]:  # a name sent in pieces (a repeated whole name is kept once)
                    slot["name"] += name
            if arguments is not None:
                if isinstance(arguments, (dict, list)):  # some servers send the object itself
                    arguments = json.dumps(arguments, ensure_ascii=False)
                if not isinstance(arguments, str):
                    raise ProtocolError("a tool call's arguments are not a string")
                slot["arguments"] += arguments

    def calls(self) -> list[dict]:
        """Complete OpenAI tool-call objects (an id made up where the server sent none)."""
        return [{"id": slot["id"] or f"call_{index}", "type": "function",
                 "function": {"name": slot["name"], "arguments": slot["arguments"]}}
                for index, slot in sorted(self._slots.items())]


def emulation_system(system: str | None, functions: list[dict]) -> str:
    """The system text that teaches the convention: the user's own system text first, then the tools."""
    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in functions]
    head = f"{system.strip()}\n\n" if system and system.strip() else ""
    return head + EMULATION_HEAD + "\n" + "\n".join(lines) + "\n" + EMULATION_RULE


class MalformedCall(ValueError):
    """The reply looks like a tool call but cannot be read as one; the message says why, in one line."""


def parse_emulated(text: str) -> tuple[str, Any] | None:
    """(name, arguments) if `text` is a call by the convention, None if it is an answer; `MalformedCall`
    for a reply that starts a call object but is not a valid one (the model is told and may retry)."""
    body = text.strip()
    fenced = _FENCED.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body.startswith("{") or '"tool"' not in body[:200]:
        return None
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise MalformedCall(f"the tool call is not valid JSON ({exc.msg}: character {exc.pos})") from None
    if not isinstance(obj, dict) or "tool" not in obj:
        return None
    if not isinstance(obj["tool"], str) or not obj["tool"]:
        raise MalformedCall('"tool" must be the name of a tool, as a string')
    arguments = obj.get("arguments", {})
    return obj["tool"], arguments


def emulated_result(name: str, result: Any = None, error: str | None = None) -> str:
    """The content of the `Tool:` turn that carries a result (or an error) back."""
    payload = {"tool": name, "error": error} if error is not None else {"tool": name, "result": result}
    return json.dumps(payload, ensure_ascii=False, default=str)
