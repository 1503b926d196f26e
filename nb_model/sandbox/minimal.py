"""`--wire minimal`: the seed protocol exactly as its documentation shows it.

The documented replies carry the text and nothing else: ``{"output": "…"}`` for a whole answer, and with
``X-Stream: true`` one ``{"text": "…"}`` line per piece, the stream simply ending (no finish, usage or
model line). No headers beyond Content-Type and HTTP framing (no request id, no cache hints). A client that
handles this handles the real API; the full wire (the default) adds the optional metadata.
"""
from __future__ import annotations

from .wire import Reply, SeedWire

WIRES = ("full", "minimal")


class MinimalSeedWire(SeedWire):
    """`SeedWire` without model, usage or finish fields."""

    def body(self, reply: Reply, text: str, finish: str) -> dict:
        return {"output": text}

    def end(self, reply: Reply, finish: str, include_usage: bool) -> bytes:
        return b""


MINIMAL_SEED = MinimalSeedWire()


def check_wire(wire: str) -> str:
    if wire not in WIRES:
        raise ValueError(f"unknown wire {wire!r}: use one of {', '.join(WIRES)}")
    return wire
