"""Wire formats. Each module builds a request and parses replies; none does I/O.

An adapter exposes:
  build(endpoint, model, spec, stream) -> (url, json_body, extra_headers)
  parse_reply(obj) -> Chunk                     (a whole non-streaming reply)
  stream_decoder() -> object with feed(bytes) -> list[Chunk] and close() -> list[Chunk]
"""
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
    done: bool = False  # the server said the reply is complete


def error_chunk(err) -> Chunk:
    """The `error` member of a reply (an object with a message, or anything) as an error Chunk."""
    return Chunk(error=str(err.get("message", err)) if isinstance(err, dict) else str(err))


def checked(chunk: Chunk) -> Chunk:
    """Reject metadata of the wrong type so callers never trip over it."""
    if chunk.finish_reason is not None and not isinstance(chunk.finish_reason, str):
        raise ProtocolError("finish_reason is not a string")
    if chunk.usage is not None and not (
            isinstance(chunk.usage, dict)
            and all(isinstance(chunk.usage.get(k, 0) or 0, int) for k in ("prompt_tokens", "completion_tokens"))):
        raise ProtocolError("usage is not an object of token counts")
    if chunk.model is not None and not isinstance(chunk.model, str):
        raise ProtocolError("model is not a string")
    return chunk


@dataclass
class Spec:
    """What to generate: everything that changes the answer except the endpoint/model."""

    prompt: str = ""
    system: str | None = None
    messages: list[dict] | None = None  # prior turns for chat (without the new prompt)
    params: dict[str, Any] = field(default_factory=dict)

    def chat_messages(self) -> list[dict]:
        msgs = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.extend(self.messages or [])
        msgs.append({"role": "user", "content": self.prompt})
        return msgs

    def transcript(self) -> str:
        """The spec as one prompt, for protocols that take plain text."""
        if not self.system and not self.messages:
            return self.prompt
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        lines = [f"{names.get(m['role'], m['role'])}: {m['content']}" for m in self.chat_messages()]
        return "\n".join(lines) + "\nAssistant:"


PROTOCOLS = ("seed", "openai", "openai-completions")


def adapter(name: str):
    """The adapter module for a protocol name."""
    if name == "seed":
        from . import seed
        return seed
    if name in ("openai", "openai-completions"):
        from . import openai
        return openai.CHAT if name == "openai" else openai.COMPLETIONS
    raise ConfigError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOLS)}")
