"""The in-kernel sandbox servers behind profiles without an endpoint (or with endpoint "embedded:ENGINE")."""
from __future__ import annotations

import threading
from typing import Any

from ..config import EMBEDDED_PREFIX, ignored_env_note
from ..errors import ConfigError
from ..notices import notice

EMBEDDED = "embedded:sandbox"  # the cache identity of the in-kernel sandbox, whatever its port

_embedded: dict[str, Any] = {}  # engine name -> its in-kernel sandbox server
_embedded_lock = threading.Lock()


def embedded_sandbox(engine: str = "sandbox"):
    """The in-process sandbox server for `engine` (see nb_model.sandbox.ENGINES), started once per
    engine on a random loopback port; "llama" is the local model, which loads in the background."""
    with _embedded_lock:
        server = _embedded.get(engine)
        if server is None:
            from ..sandbox import ENGINES, make_engine, start_sandbox
            if engine not in ENGINES:
                raise ConfigError(f"unknown embedded engine {engine!r}: use endpoint "
                                  + " or ".join(EMBEDDED_PREFIX + name for name in ENGINES))
            if engine == "sandbox":
                server = start_sandbox(token_rate=200.0)
                notice(f"nb_model: no endpoint configured, using the embedded sandbox (simulated model) at "
                       f"{server.url}{ignored_env_note()}")
            else:
                model = make_engine(engine)
                server = start_sandbox(engine=model)
                notice(f"nb_model: using the local model {model.description} at {server.url}; "
                       f"loading the model (first answer after a few seconds){ignored_env_note()}")
            _embedded[engine] = server
        return server
