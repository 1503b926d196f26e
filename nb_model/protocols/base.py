"""What every wire format shares: the parsed `Chunk`, the request `Spec`, checks of what servers send,
the protocol names. No I/O; imports nothing of nb_model but its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ProtocolError


@dataclass
class Chunk:
    """One parsed piece of a reply: a text delta and/or end-of-reply metadata."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    model: str | None = None
    error: str | None = None
    error_status: int | None = None  # an HTTP status the error object carries (code/status), if any
    done: bool = False  # the server said the reply is complete
    tool_calls: list | None = None  # tool-call deltas (streamed) or whole calls (a whole reply), as sent


MAX_TOKEN_COUNT = 10 ** 9  # a token count above this is nonsense, whatever the model


def clean_text(text: str) -> str:
    """`text` with unpaired UTF-16 surrogates (e.g. a JSON "\\ud800") replaced by U+FFFD, so it can be
    shown and stored as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _token_count(value):
    """A usage count the client can use: a plain int from 0 to MAX_TOKEN_COUNT, else None (estimated)."""
    return value if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT else None


def _status(value) -> int | None:
    """An HTTP error status (400-599) given as an int or digits, else None."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if type(value) is int and 400 <= value <= 599 else None


def error_chunk(err, reply=None) -> Chunk:
    """The `error` member of a reply (an object with a message, or anything) as an error Chunk, with the
    status code the error (or the reply around it) carries, if any."""
    places = [err if isinstance(err, dict) else {}, reply if isinstance(reply, dict) else {}]
    status = next((s for place in places for k in ("code", "status", "status_code")
                   if (s := _status(place.get(k))) is not None), None)
    return Chunk(error=clean_text(str(err.get("message", err)) if isinstance(err, dict) else str(err)),
                 error_status=status)


def checked(chunk: Chunk) -> Chunk:
    """Reject metadata of the wrong type so callers never trip over it; drop token counts that are not
    plausible (negative, huge, booleans, floats: estimated instead); make text safe to show and store."""
    if chunk.finish_reason is not None and not isinstance(chunk.finish_reason, str):
        raise ProtocolError("finish_reason is not a string")
    if chunk.usage is not None and not isinstance(chunk.usage, dict):
        raise ProtocolError("usage is not an object of token counts")
    if chunk.model is not None and not isinstance(chunk.model, str):
        raise ProtocolError("model is not a string")
    if chunk.usage is not None:
        counts = {k: _token_count(chunk.usage.get(k)) for k in ("prompt_tokens", "completion_tokens")}
        chunk.usage = {k: v for k, v in counts.items() if v is not None} or None
    chunk.text = clean_text(chunk.text)
    if chunk.finish_reason is not None:
        chunk.finish_reason = clean_text(chunk.finish_reason)
    if chunk.model is not None:
        chunk.model = clean_text(chunk.model)
    return chunk


@dataclass
class Spec:
    """What to generate: everything that changes the answer except the endpoint/model."""

    prompt: str = ""
    system: str | None = None
    messages: list[dict] | None = None  # prior turns for chat (without the new prompt)
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict] | None = None  # tool schemas ({"type": "function", "function": {...}}), chat only
    tool_choice: Any = None  # "auto" | "none" | "required" | {"type": "function", ...}; None: the server's
    after: list[dict] | None = None  # turns after the prompt: the tool calls and results so far

    def chat_messages(self) -> list[dict]:
        msgs = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.extend(self.messages or [])
        msgs.append({"role": "user", "content": self.prompt})
        msgs.extend(self.after or [])
        return msgs

    def transcript(self) -> str:
        """The spec as one prompt, for protocols that take plain text."""
        if not self.system and not self.messages and not self.after:
            return self.prompt
        names = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
        lines = [f"{names.get(m['role'], m['role'])}: {m.get('content') or ''}" for m in self.chat_messages()]
        return "\n".join(lines) + "\nAssistant:"


PROTOCOLS = ("seed", "openai", "openai-completions")


def endpoint_of(target) -> str:
    """The endpoint URL of `target`: a string, or an object with an `.endpoint` (a profile)."""
    endpoint = target if isinstance(target, str) else getattr(target, "endpoint", None)
    if not isinstance(endpoint, str):
        raise ConfigError(f"no endpoint to send requests to in {type(target).__name__}")
    return endpoint.rstrip("/")
