"""A simulated text-generation API on loopback, for tutorials and tests.

    from nb_model.sandbox import start_sandbox
    server = start_sandbox(api_key="sk-test")   # started on a free port
    server.url                                  # 'http://127.0.0.1:PORT'
    server.inject("503", times=2); server.stats(); server.stop()

The HTTP server module is imported on first use, so importing this package
costs only the engine's stdlib imports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine import Engine, SimulatedEngine, TokenStream, count_tokens, messages_to_prompt

if TYPE_CHECKING:
    from .server import SandboxServer

__all__ = ["Engine", "SandboxServer", "SimulatedEngine", "TokenStream", "count_tokens",
           "messages_to_prompt", "start_sandbox"]


def start_sandbox(**kw: Any) -> "SandboxServer":
    """Create a `SandboxServer(**kw)` and start it on a background daemon thread."""
    from .server import SandboxServer

    return SandboxServer(**kw).start()


def __getattr__(name: str) -> Any:
    if name == "SandboxServer":
        from .server import SandboxServer

        return SandboxServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
