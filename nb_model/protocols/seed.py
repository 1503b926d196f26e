"""The seed API: POST /v1/generate, reply {"output"}, JSON-lines stream with X-Stream: true."""
from __future__ import annotations

import json

from ..errors import ProtocolError
from .base import Chunk, Spec, checked, endpoint_of, error_chunk
from .lines import LineSplitter

DEFAULT_PATH = "/v1/generate"
FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "language", "seed")
# The documented stream is `{"text"}` lines only, with no closing line: a body that ends cleanly (chunked
# terminator, Content-Length met, or a close-delimited HTTP/1.0 body) is the whole answer. A transport-level
# cut (incomplete read, chunk error, reset) still breaks the stream.
CLEAN_END_COMPLETES = True


def url_for(target) -> str:
    """The URL requests go to, from an endpoint (a base URL, or the whole …/generate URL) or a profile."""
    endpoint = endpoint_of(target)
    return endpoint if endpoint.endswith("/generate") else endpoint + DEFAULT_PATH


def build(model: str | None, spec: Spec, stream: bool):
    """(JSON body, extra headers) of a request."""
    body = {"prompt": spec.transcript()}
    body.update({k: spec.params[k] for k in FIELDS if spec.params.get(k) is not None})
    if model:
        body["model"] = model
    headers = {"X-Stream": "true"} if stream else {}
    return body, headers


def _chunk(obj, *, whole: bool) -> Chunk:
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("error"):
        return error_chunk(obj["error"], obj)
    text = obj.get("output" if whole else "text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ProtocolError("the reply's text field is not a string")
    finish = obj.get("finish_reason")
    return checked(Chunk(text=text, finish_reason=finish, usage=obj.get("usage"), model=obj.get("model"),
                         done=whole or finish is not None))


def parse_reply(obj) -> Chunk:
    if isinstance(obj, dict) and obj.get("error") and "output" not in obj:
        return error_chunk(obj["error"], obj)
    if not isinstance(obj, dict) or "output" not in obj:
        raise ProtocolError('reply has no "output" field')
    chunk = _chunk(obj, whole=True)
    chunk.finish_reason = chunk.finish_reason or "stop"
    return chunk


class StreamDecoder:
    """JSON lines: one object per line, blank keep-alive lines ignored."""

    def __init__(self) -> None:
        self._lines = LineSplitter()

    def feed(self, data: bytes) -> list[Chunk]:
        return self._parse(self._lines.feed(data))

    def close(self) -> list[Chunk]:
        return self._parse(self._lines.close())

    def _parse(self, lines: list[str]) -> list[Chunk]:
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise ProtocolError(f"malformed JSON line in stream: {line[:60]!r}") from None
            out.append(_chunk(obj, whole=False))
        return out


def stream_decoder() -> StreamDecoder:
    return StreamDecoder()
