"""The three wire formats the sandbox speaks: request parsing and reply framing.

* `SeedWire` — ``POST /v1/generate``; streams JSON lines when ``X-Stream: true``.
* `ChatWire` — ``POST /v1/chat/completions`` (OpenAI); streams SSE.
* `CompletionWire` — ``POST /v1/completions`` (OpenAI legacy); streams SSE.

Each turns a JSON body into a `Job` (raising `BadRequest` with a one-line
message) and frames the reply: `body()` for a whole answer; `start()`,
`piece()`, `end()` for a stream, plus the `garbage()` and `error_event()` that
the fault injector needs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .engine import messages_to_prompt
from .schema import from_response_format

DEFAULT_MAX_TOKENS = 256


class BadRequest(ValueError):
    """The request is invalid; the message becomes a 400 error."""


@dataclass
class Job:
    """One validated generation request."""

    prompt: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    language: str | None = None
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    model: str | None = None  # the model asked for, echoed in the reply
    schema: dict | None = None  # an OpenAI response_format's JSON Schema ({} for json_object)

    def params(self) -> dict[str, Any]:
        """Keyword arguments of `Engine.generate`."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k, "language": self.language, "seed": self.seed}


@dataclass
class Reply:
    """Identity of one reply, shared by all of its chunks."""

    id: str
    created: int
    model: str
    usage: dict[str, int] = field(default_factory=dict)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (non-ASCII text stays as is)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _number(body: Mapping, name: str, default: float, low: float, high: float, text: str) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"{name} must be {text}")
    return float(value)


def _integer(body: Mapping, name: str, text: str, low: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise BadRequest(f"{name} must be {text}")
    return value


def parse_job(body: Any, prompt: str, *, cap: int, stream: bool, include_usage: bool = False) -> Job:
    """Validate the sampling parameters shared by every wire format."""
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = min(DEFAULT_MAX_TOKENS, cap)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= cap:
        raise BadRequest(f"max_tokens must be between 1 and {cap}")
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, "greater than 0 and at most 1")
    if top_p == 0:
        raise BadRequest("top_p must be greater than 0 and at most 1")
    language = body.get("language")
    if language is not None and not isinstance(language, str):
        raise BadRequest("language must be a string such as 'en', 'zh', 'fr', 'de' or 'es'")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string")
    return Job(
        prompt=prompt, max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0, "between 0 and 2"),
        top_p=top_p,
        top_k=_integer(body, "top_k", "a non-negative integer (0 = off)", low=0) or None,
        language=language, seed=_integer(body, "seed", "an integer"),
        stream=stream, include_usage=include_usage, model=model or None,
    )


def _object(body: Any) -> Mapping:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _openai_stream(body: Mapping) -> tuple[bool, bool]:
    options = body.get("stream_options") or {}
    return body.get("stream") is True, isinstance(options, dict) and options.get("include_usage") is True


class SeedWire:
    """The seed protocol: ``{"prompt", ...}`` → ``{"output", ...}``; JSON lines when streaming."""

    content_type = "application/x-ndjson; charset=utf-8"  # `iter_lines(decode_unicode=True)` yields str
    id_prefix = "gen-"

    def job(self, body: Any, headers: Mapping[str, str], cap: int) -> Job:
        body = _object(body)
        if "prompt" not in body:
            raise BadRequest("missing 'prompt'")
        if not isinstance(body["prompt"], str):
            raise BadRequest("'prompt' must be a string")
        stream = (headers.get("X-Stream") or "").strip().lower() in ("true", "1", "yes")
        return parse_job(body, body["prompt"], cap=cap, stream=stream)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}

    def body(self, reply: Reply, text: str, finish: str) -> dict:
        return {"output": text, "model": reply.model, "finish_reason": finish, "usage": reply.usage}

    def start(self, reply: Reply) -> bytes:
        return b""

    def piece(self, reply: Reply, text: str) -> bytes:
        return dumps({"text": text}) + b"\n"

    def end(self, reply: Reply, finish: str, include_usage: bool) -> bytes:
        return dumps({"text": "", "finish_reason": finish, "usage": reply.usage, "model": reply.model}) + b"\n"

    def garbage(self) -> bytes:
        return b'{"text": "abc\n'

    def error_event(self, message: str) -> bytes:
        return dumps({"error": {"message": message, "type": "server_error"}}) + b"\n"


class _SSEWire:
    """OpenAI framing: ``data: {json}`` events, ``data: [DONE]`` at the end."""

    content_type = "text/event-stream; charset=utf-8"
    object_name = chunk_object = ""

    def event(self, obj: Any) -> bytes:
        return b"data: " + dumps(obj) + b"\n\n"

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def chunk(self, reply: Reply, choice: dict | None) -> dict:
        return {"id": reply.id, "object": self.chunk_object, "created": reply.created,
                "model": reply.model, "choices": [choice] if choice else []}

    def choice(self, content: str | None, finish: str | None) -> dict:
        raise NotImplementedError

    def start(self, reply: Reply) -> bytes:
        return b""

    def piece(self, reply: Reply, text: str) -> bytes:
        return self.event(self.chunk(reply, self.choice(text, None)))

    def end(self, reply: Reply, finish: str, include_usage: bool) -> bytes:
        out = self.event(self.chunk(reply, self.choice(None, finish)))
        if include_usage:
            out += self.event({**self.chunk(reply, None), "usage": reply.usage})
        return out + b"data: [DONE]\n\n"

    def garbage(self) -> bytes:
        return b"data: {not json\n\n"

    def error_event(self, message: str) -> bytes:
        return self.event({"error": {"message": message, "type": "server_error"}})


class ChatWire(_SSEWire):
    """OpenAI ``chat.completion``: messages in, ``choices[0].message.content`` out."""

    object_name = "chat.completion"
    id_prefix = "chatcmpl-"
    chunk_object = "chat.completion.chunk"

    def job(self, body: Any, headers: Mapping[str, str], cap: int) -> Job:
        body = _object(body)
        if "messages" not in body:
            raise BadRequest("missing 'messages'")
        try:
            prompt = messages_to_prompt(body["messages"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        stream, include_usage = _openai_stream(body)
        job = parse_job(body, prompt, cap=cap, stream=stream, include_usage=include_usage)
        try:
            job.schema = from_response_format(body.get("response_format"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return job

    def choice(self, content: str | None, finish: str | None) -> dict:
        delta = {} if content is None else {"content": content}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def start(self, reply: Reply) -> bytes:
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}
        return self.event(self.chunk(reply, role))

    def body(self, reply: Reply, text: str, finish: str) -> dict:
        return {"id": reply.id, "object": self.object_name, "created": reply.created,
                "model": reply.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": finish}],
                "usage": reply.usage}


class CompletionWire(_SSEWire):
    """OpenAI legacy ``text_completion``: prompt in, ``choices[0].text`` out."""

    object_name = chunk_object = "text_completion"
    id_prefix = "cmpl-"

    def job(self, body: Any, headers: Mapping[str, str], cap: int) -> Job:
        body = _object(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if prompt is None:
            raise BadRequest("missing 'prompt'")
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string (or a list of one string)")
        stream, include_usage = _openai_stream(body)
        return parse_job(body, prompt, cap=cap, stream=stream, include_usage=include_usage)

    def choice(self, content: str | None, finish: str | None) -> dict:
        return {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish}

    def body(self, reply: Reply, text: str, finish: str) -> dict:
        return {"id": reply.id, "object": self.object_name, "created": reply.created,
                "model": reply.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                "usage": reply.usage}
