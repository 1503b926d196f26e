"""Wire formats. Each module builds a request and parses replies; none does I/O.

An adapter exposes:
  url_for(endpoint_or_profile) -> str           (where its requests go, from an endpoint or anything with one)
  build(model, spec, stream) -> (json_body, extra_headers)
  parse_reply(obj) -> Chunk                     (a whole non-streaming reply)
  stream_decoder() -> object with feed(bytes) -> list[Chunk] and close() -> list[Chunk]
"""
from __future__ import annotations

from ..errors import ConfigError
from .base import (MAX_TOKEN_COUNT, PROTOCOLS, Chunk, Spec, checked, clean_text, endpoint_of,  # noqa: F401
                   error_chunk)

__all__ = ["MAX_TOKEN_COUNT", "PROTOCOLS", "Chunk", "Spec", "adapter", "checked", "clean_text", "endpoint_of",
           "error_chunk"]


def adapter(name: str):
    """The adapter module for a protocol name."""
    if name == "seed":
        from . import seed
        return seed
    if name in ("openai", "openai-completions"):
        from . import openai
        return openai.CHAT if name == "openai" else openai.COMPLETIONS
    raise ConfigError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOLS)}")
