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

__all__ = ["ENGINES", "Engine", "SandboxServer", "SimulatedEngine", "TokenStream", "count_tokens",
           "make_engine", "messages_to_prompt", "start_sandbox"]

# Engine name -> "module:class", built with no arguments by `make_engine`
# (`nb-model serve --engine NAME`, the client's embedded servers).
ENGINES = {
    "sandbox": "nb_model.sandbox.engine:SimulatedEngine",
    "llama": "nb_model.sandbox.llama_engine:LlamaEngine",  # needs the `local` extra
}


def make_engine(name: str) -> Engine:
    """A new engine by registry name; the module behind it is imported now."""
    import importlib

    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def start_sandbox(**kw: Any) -> "SandboxServer":
    """Create a `SandboxServer(**kw)` and start it on a background daemon thread."""
    from .server import SandboxServer

    return SandboxServer(**kw).start()


def __getattr__(name: str) -> Any:
    if name == "SandboxServer":
        from .server import SandboxServer

        return SandboxServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
