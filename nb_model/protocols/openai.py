"""OpenAI-compatible chat completions and (legacy) completions, SSE streaming."""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ProtocolError
from .base import Chunk, Spec, checked, endpoint_of, error_chunk
from .sse import SSEDecoder

SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed")


def _base(endpoint: str) -> str:
    for suffix in ("/chat/completions", "/completions"):
        if endpoint.endswith(suffix):
            endpoint = endpoint[: -len(suffix)]
    return endpoint if endpoint.endswith("/v1") else endpoint + "/v1"


def _language_hint(spec: Spec) -> str | None:
    lang = spec.params.get("language")
    return f"Answer in the language with code '{lang}'." if lang else None


@dataclass(frozen=True)
class Adapter:
    chat: bool

    def url_for(self, target) -> str:
        """The URL requests go to, from an endpoint (a base URL with or without /v1, or the whole URL) or a
        profile."""
        return _base(endpoint_of(target)) + ("/chat/completions" if self.chat else "/completions")

    def build(self, model: str | None, spec: Spec, stream: bool):
        """(JSON body, extra headers) of a request."""
        body: dict = {"model": model or "default"}
        body.update({k: spec.params[k] for k in SAMPLING if spec.params.get(k) is not None})
        hint = _language_hint(spec)
        if self.chat:
            msgs = spec.chat_messages()
            if hint:
                msgs.insert(0, {"role": "system", "content": hint})
            body["messages"] = msgs
            if spec.tools:
                body["tools"] = spec.tools
                if spec.tool_choice is not None:
                    body["tool_choice"] = spec.tool_choice
            if spec.params.get("response_format") is not None:  # structured output (JSON Schema)
                body["response_format"] = spec.params["response_format"]
        else:
            body["prompt"] = (hint + "\n\n" if hint else "") + spec.transcript()
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body, {}

    def _choice_text(self, choice: dict, *, delta: bool) -> str:
        if self.chat:
            part = choice.get("delta" if delta else "message") or {}
            if not isinstance(part, dict):
                raise ProtocolError("a choice's message is not a JSON object")
            text = part.get("content")
        else:
            text = choice.get("text")
        if text is not None and not isinstance(text, str):
            raise ProtocolError("the reply's text field is not a string")
        return text or ""

    def _chunk(self, obj, *, delta: bool) -> Chunk:
        if not isinstance(obj, dict):
            raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
        if obj.get("error"):
            return error_chunk(obj["error"], obj)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise ProtocolError('reply has no "choices" list')
        chunk = Chunk(usage=obj.get("usage"), model=obj.get("model"))
        if choices:
            if not isinstance(choices[0], dict):
                raise ProtocolError("a choice is not a JSON object")
            chunk.text = self._choice_text(choices[0], delta=delta)
            if self.chat:
                chunk.tool_calls = _tool_calls(choices[0].get("delta" if delta else "message"))
            chunk.finish_reason = choices[0].get("finish_reason")
        return checked(chunk)

    def parse_reply(self, obj) -> Chunk:
        chunk = self._chunk(obj, delta=False)
        chunk.done = True
        return chunk

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)


def _tool_calls(part) -> list | None:
    """The `tool_calls` of a chat message or delta: a list of objects, else a ProtocolError."""
    calls = part.get("tool_calls") if isinstance(part, dict) else None
    if calls is None:
        return None
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise ProtocolError("a message's tool_calls is not a list of objects")
    return calls or None


class StreamDecoder:
    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter
        self._sse = SSEDecoder()

    def feed(self, data: bytes) -> list[Chunk]:
        return self._parse(self._sse.feed(data))

    def close(self) -> list[Chunk]:
        return self._parse(self._sse.close())

    def _parse(self, events: list[str]) -> list[Chunk]:
        out = []
        for data in events:
            if data.strip() == "[DONE]":
                out.append(Chunk(done=True))
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                raise ProtocolError(f"malformed SSE event: {data[:60]!r}") from None
            out.append(self._adapter._chunk(obj, delta=True))
        return out


CHAT = Adapter(chat=True)
COMPLETIONS = Adapter(chat=False)
