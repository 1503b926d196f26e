"""Deterministic tool use for the sandbox, on both wires.

A request offers tools by the OpenAI chat wire (``tools`` in the body) or by the
emulation convention of `nb_model.protocols.tools` (the tool list in the
prompt's system text, on the seed wire). The simulated model then:

1. takes the latest user question and the tool results after it;
2. calls the first tool, in the order offered, that the question mentions (a
   word of its name or description, 4+ letters, singular or plural) and that
   has no result yet: one call per turn, so two tools make a two-step loop. A
   result that says the call was malformed does not count: the call is made
   again;
3. fills the arguments from the question: an enum value named in it; numbers
   in order for integer/number parameters; for strings a quoted value, else the
   word after the parameter's name, else a word holding a digit or in capitals
   (``Q3``, ``EU``); optional parameters with nothing found are left out;
4. once every mentioned tool has a result, answers with the results, one
   sentence per tool (``[sandbox] sales_by_region returned {...}.``).

With the ``tool-malformed`` fault a call's arguments are cut mid-JSON. A request
whose question mentions no tool is answered by the engine as usual.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Generator

from ..protocols.tools import EMULATION_HEAD, EMULATION_RULE
from .vocab import STOPWORDS

_WORD = re.compile(r"[^\W\d_]{4,}")
_QUOTED = re.compile(r"'([^'\n]{1,60})'|\"([^\"\n]{1,60})\"")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_MARKED = re.compile(r"\b(?=\w*\d)[A-Za-z][\w-]*\d[\w-]*\b|\b[A-Z]{2,}\b")
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")
ARG_PIECE = 7  # characters of a call's arguments per streamed delta
IGNORED = STOPWORDS | {"tool", "tools", "function", "return", "returns", "give", "given", "list", "from",
                       "with", "that", "this", "what", "which", "like", "each", "call"}


@dataclass
class Turn:
    """What the simulated model does: call tools (`calls`) or answer (`text`)."""

    calls: list[dict] | None = None
    text: str | None = None


def _stem(word: str) -> str:
    word = word.lower()
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text or "")} - IGNORED


def _mentioned(function: dict, question: str) -> bool:
    asked = _words(question)
    own = _words(function.get("name", "").replace("_", " ").replace("-", " ")) | \
        _words(function.get("description", ""))
    return bool(asked & own)


def _arguments(function: dict, question: str) -> dict:
    params = function.get("parameters") or {}
    properties, required = params.get("properties") or {}, set(params.get("required") or [])
    quoted = [a or b for a, b in _QUOTED.findall(question)]
    numbers = _NUMBER.findall(question)
    marked = [m for m in _MARKED.findall(question) if m not in quoted]
    args: dict = {}
    for name, schema in properties.items():
        schema = schema if isinstance(schema, dict) else {}
        kind = schema.get("type")
        kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
        value = None
        if "enum" in schema:
            value = next((v for v in schema["enum"] if re.search(rf"\b{re.escape(str(v))}\b", question, re.I)),
                         schema["enum"][0] if name in required else None)
        elif kind in ("integer", "number") and numbers:
            text = numbers.pop(0)
            value = int(float(text)) if kind == "integer" else float(text)
        elif kind == "string" or kind is None:
            after = re.search(rf"\b{re.escape(name.replace('_', ' '))}\s+['\"]?([\w-]+)", question, re.I)
            if quoted:
                value = quoted.pop(0)
            elif after and after.group(1).lower() not in IGNORED:
                value = after.group(1)
            elif marked:
                value = marked.pop(0)
        elif kind == "boolean" and name in required:
            value = bool(re.search(rf"\b{re.escape(name)}\b", question, re.I))
        if value is None and name in required:
            value = {"integer": 1, "number": 1.0, "array": [], "object": {}, "boolean": False}.get(kind, name)
        if value is not None:
            args[name] = value
    return args


def _answer(results: list[tuple[str, str]]) -> str:
    sentences = []
    for name, content in results:
        if "malformed" in content:
            continue  # a call made again since
        try:
            obj = json.loads(content)
        except ValueError:
            obj = content
        if isinstance(obj, dict) and set(obj) >= {"tool"} and ("result" in obj or "error" in obj):
            obj = {"error": obj["error"]} if obj.get("error") is not None else obj.get("result")
        if isinstance(obj, dict) and set(obj) == {"error"}:
            sentences.append(f"{name} failed: {obj['error']}.")
        else:
            shown = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
            sentences.append(f"{name} returned {shown}.")
    return "[sandbox] " + " ".join(sentences) if sentences else "[sandbox] No tool was needed."


def decide(functions: list[dict], question: str, results: list[tuple[str, str]], malformed: bool) -> Turn:
    """The next move given the offered functions, the question and the (name, content) results so far."""
    done = {name for name, content in results if "malformed" not in content}
    for function in functions:
        if isinstance(function, dict) and function.get("name") not in done and _mentioned(function, question):
            arguments = json.dumps(_arguments(function, question), ensure_ascii=False)
            if malformed:
                arguments = arguments[: max(1, len(arguments) // 2)]
            return Turn(calls=[{"name": function["name"], "arguments": arguments}])
    if not results:
        return Turn()  # no tool fits: the engine answers
    return Turn(text=_answer(results))


# -- the OpenAI chat wire ----------------------------------------------------------------------

def chat_turn(body: dict, malformed: bool) -> Turn | None:
    """The turn for a chat request offering `tools`, else None."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none":
        return None
    functions = [t.get("function") for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last_user < 0:
        return None
    question = messages[last_user].get("content") or ""
    names = {}
    for m in messages[last_user:]:
        for call in m.get("tool_calls") or []:
            if isinstance(call, dict):
                names[call.get("id")] = (call.get("function") or {}).get("name", "?")
    results = [(names.get(m.get("tool_call_id"), "?"), str(m.get("content") or ""))
               for m in messages[last_user:] if m.get("role") == "tool"]
    turn = decide(functions, question if isinstance(question, str) else "", results, malformed)
    return turn if turn.calls or turn.text else None


def call_objects(turn: Turn, request_id: str) -> list[dict]:
    return [{"id": f"call_{request_id[-8:]}_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(turn.calls)]


def call_deltas(calls: list[dict]) -> Generator[dict, None, None]:
    """The `tool_calls` deltas of a stream: per call, its id and name, then the arguments in small pieces."""
    for index, call in enumerate(calls):
        yield {"index": index, "id": call["id"], "type": "function",
               "function": {"name": call["function"]["name"], "arguments": ""}}
        arguments = call["function"]["arguments"]
        for at in range(0, len(arguments), ARG_PIECE):
            yield {"index": index, "function": {"arguments": arguments[at:at + ARG_PIECE]}}


# -- the emulation convention (seed wire) ------------------------------------------------------

def emulated_turn(prompt: str, malformed: bool) -> Turn | None:
    """The turn for a prompt that follows the emulation convention, else None."""
    if EMULATION_HEAD not in prompt:
        return None
    head_end = prompt.index(EMULATION_HEAD) + len(EMULATION_HEAD)
    rule = prompt.find(EMULATION_RULE, head_end)
    functions = []
    for line in prompt[head_end:rule if rule >= 0 else None].splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            functions.append(obj)
    rest = prompt[rule + len(EMULATION_RULE):] if rule >= 0 else prompt[head_end:]
    user = rest.rfind("\nUser: ")
    if user < 0:
        return None
    turns = re.split(r"\n(?=(?:User|Assistant|Tool):)", rest[user + 1:])
    question = turns[0][len("User: "):]
    results = []
    for t in turns[1:]:
        if t.startswith("Tool:"):
            content = t[len("Tool:"):].strip()
            try:
                results.append((str(json.loads(content).get("tool", "?")), content))
            except (ValueError, AttributeError):
                results.append(("?", content))
    turn = decide(functions, question, results, malformed)
    if turn.calls:
        call = turn.calls[0]
        text = '{"tool": ' + json.dumps(call["name"]) + ', "arguments": ' + call["arguments"] + "}"
        return Turn(text=text)
    return turn if turn.text else None


def pieces(text: str) -> Generator[str, None, str]:
    """`text` as word/punctuation pieces, for the server's usual token stream."""
    yield from _PIECE.findall(text)
    return "stop"


# -- hooks of the server ----------------------------------------------------------------------

def turn_for(chat: bool, body: dict, prompt: str, fault_kind: str) -> Turn | None:
    """The tool turn of a request (None: not a tool request, or no tool fits: the engine answers)."""
    malformed = fault_kind == "tool-malformed"
    return chat_turn(body, malformed) if chat else emulated_turn(prompt, malformed)


def chat_frames(wire, reply, turn: Turn, request_id: str, include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed tool-call reply, each its own HTTP chunk."""
    calls = call_objects(turn, request_id)
    events = [wire.start(reply)]
    deltas = list(call_deltas(calls))
    for delta in deltas:
        choice = {"index": 0, "delta": {"tool_calls": [delta]}, "logprobs": None, "finish_reason": None}
        events.append(wire.event(wire.chunk(reply, choice)))
    events.append(wire.event(wire.chunk(reply, {"index": 0, "delta": {}, "logprobs": None,
                                                "finish_reason": "tool_calls"})))
    if include_usage:
        events.append(wire.event({**wire.chunk(reply, None), "usage": reply.usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def chat_body(wire, reply, turn: Turn, request_id: str) -> dict:
    """A whole (non-streamed) tool-call reply."""
    body = wire.body(reply, "", "tool_calls")
    body["choices"][0]["message"] = {"role": "assistant", "content": None,
                                     "tool_calls": call_objects(turn, request_id)}
    return body
