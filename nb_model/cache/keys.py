"""Cache keys: sha256 over the canonical JSON of a request's identity.

The identity (`Client.identity(spec)`) holds everything that changes the answer:
protocol, endpoint (the embedded sandbox is always "embedded:sandbox"), model,
system text, messages, the prompt after interpolation and every parameter.
It never holds the API key, and streaming on/off is not part of it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_VERSION = "nb_model-cache-v1"  # bump to invalidate every key when the identity's meaning changes


def canonical_json(obj: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(identity: dict[str, Any]) -> str:
    """The hex sha256 of the versioned canonical identity."""
    data = canonical_json({"v": KEY_VERSION, "identity": identity})
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()  # never raises on odd text


def prompt_head(identity: dict[str, Any], words: int = 12) -> str:
    """The first words of the prompt, for listings."""
    head = " ".join(str(identity.get("prompt") or "").split()[:words])
    return head[:120]
