"""Count the tokens of a reply as it passes through the relay, with the protocols' own decoders."""
from __future__ import annotations

import json

from ..protocols import adapter
from ..tokens import estimate_tokens
from ..errors import ProtocolError

WHOLE_LIMIT = 4 << 20  # bytes of a non-streamed reply kept for counting


def prompt_text(body: object) -> str:
    """The prompt text of a request body of either protocol (``prompt`` or chat ``messages``)."""
    if not isinstance(body, dict):
        return ""
    prompt, messages = body.get("prompt"), body.get("messages")
    parts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, list) else []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        parts += content if isinstance(content, list) else [content]
    texts = [p.get("text") if isinstance(p, dict) else p for p in parts]  # content parts: {"text": ...}
    for message in messages if isinstance(messages, list) else []:  # the tool calls of earlier turns
        texts += _call_texts(message.get("tool_calls") if isinstance(message, dict) else None)
    if isinstance(body.get("tools"), list):  # the tool schemas are prompt tokens too
        texts.append(json.dumps(body["tools"], ensure_ascii=False))
    return "\n".join(t for t in texts if isinstance(t, str))


def _call_texts(calls) -> list[str]:
    """The names and argument texts of tool calls (whole or deltas)."""
    functions = [c.get("function") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    return [v for f in functions if isinstance(f, dict) for v in (f.get("name"), f.get("arguments"))
            if isinstance(v, str)]


class UsageMeter:
    """Feed reply bytes; `tokens()` is the server-reported usage, else an estimate."""

    def __init__(self, protocol: str, request_body: bytes):
        self._adapter = adapter(protocol)
        self._request = request_body
        self._decoder = None
        self._whole = bytearray()
        self._text: list[str] = []
        self._usage: dict | None = None
        self._broken = False

    def start(self, content_type: str) -> None:
        """Streams (SSE, JSON lines) are decoded piece by piece; JSON replies at the end."""
        ctype = content_type.split(";")[0].strip().lower()
        if ctype != "application/json":
            self._decoder = self._adapter.stream_decoder()

    def feed(self, data: bytes) -> None:
        if self._broken:
            return
        if self._decoder is None:
            if len(self._whole) < WHOLE_LIMIT:
                self._whole += data
            return
        self._take(lambda: self._decoder.feed(data))

    def _take(self, parse) -> None:
        try:
            for chunk in parse():
                self._text.append(chunk.text)
                self._text += _call_texts(chunk.tool_calls)  # a reply that calls tools has no text
                if chunk.usage:
                    self._usage = chunk.usage
        except (ProtocolError, ValueError):
            self._broken = True  # count what was understood; never fail the reply over metering

    def _prompt(self) -> str:
        try:
            return prompt_text(json.loads(self._request)) or self._request.decode("utf-8", "replace")
        except (ValueError, UnicodeDecodeError):
            return self._request.decode("utf-8", "replace")

    def tokens(self) -> int:
        """Prompt + completion tokens of the reply (estimated where the server did not say)."""
        if self._decoder is not None:
            self._take(self._decoder.close)
        elif self._whole:
            self._take(lambda: [self._adapter.parse_reply(json.loads(bytes(self._whole)))])
        usage = self._usage or {}
        prompt = int(usage.get("prompt_tokens") or 0) or estimate_tokens(self._prompt())
        completion = int(usage.get("completion_tokens") or 0) or estimate_tokens("".join(self._text))
        return prompt + completion
