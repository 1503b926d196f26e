"""nb_model: call text-generation HTTP APIs from notebooks.

    %load_ext nb_model
    %%generate --max-tokens 200 -t 0.7
    Explain {topic} in plain words.

Python API: `generate`, `stream`, `generate_many`, `extract`, `evaluate`, `Panel`, `history`, `Index`, `tool`.
Everything heavy is imported on first use so `%load_ext nb_model` stays fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .results import Generation


def _client(profile=None, model=None):
    from .client import client_for
    return client_for(profile, model=model)


def stream(prompt: str, *, profile: str | None = None, model: str | None = None, **params):
    """Start a generation and return a `Stream`: iterate it for text deltas, then read `.generation`."""
    return _client(profile, model).stream(prompt, **params)


def generate(prompt: str, *, profile: str | None = None, model: str | None = None, tools=None, context=None,
             k: int | None = None, **params) -> "Generation":
    """Generate a whole answer and return a `Generation` (text, finish_reason, usage, timings).

    `tools=[f, g]`: functions the model may call (see nb_model.tools); `.exchange` then holds every call.
    `context` (a path, list of strings, pandas Series/DataFrame or `Index`): answer from its `k` (default 5)
    best passages, citing them by number; the Generation's `.passages` holds the passages sent."""
    if tools is not None and (context is not None or k is not None):
        from .errors import ConfigError
        raise ConfigError("use either tools= or context=, not both")
    if tools is not None:
        from .tools import run_tools
        return run_tools(prompt, tools, profile=profile, model=model, **params)
    if context is not None or k is not None:
        if context is None:
            from .errors import ConfigError
            raise ConfigError("k needs context= (the documents to retrieve from)")
        from .retrieval import generate as grounded
        return grounded(_client(profile, model), prompt, context, k=k, **params)
    return _client(profile, model).generate(prompt, **params)


def add_profile(name: str, **settings):
    """Define a profile for this session: `add_profile("mine", endpoint=..., protocol="openai", key_env=...)`."""
    from .config import add_profile as add
    return add(name, **settings)


def sandbox_server():
    """The embedded sandbox server of this kernel (started if needed): `.url`, `.inject(fault)`, `.stats()`."""
    from .client import embedded_sandbox
    return embedded_sandbox()


def __getattr__(name: str):
    """Lazy access to the heavier parts of the public API."""
    lazy = {
        "Generation": ("results", "Generation"),
        "Usage": ("results", "Usage"),
        "Client": ("client", "Client"),
        "Profile": ("config", "Profile"),
        "generate_many": ("batch", "generate_many"),
        "split_text": ("batch", "split_text"),
        "summarize_long": ("batch", "summarize_long"),
        "Panel": ("panel", "Panel"),
        "history": ("cache", "history"),
        "start_sandbox": ("sandbox", "start_sandbox"),
        "tool": ("tools", "tool"),
        "Index": ("retrieval", "Index"),
        "Passage": ("retrieval", "Passage"),
        "extract": ("datasets.extract", "extract"),
        "evaluate": ("datasets.evaluate", "evaluate"),
        "judge": ("datasets.scorers", "judge"),
        "Evaluation": ("datasets.evaluate", "Evaluation"),
    }
    if name in lazy:
        import importlib
        module, attr = lazy[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'nb_model' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """`%load_ext nb_model`: register %%generate / %generate; notices show in the notebook."""
    from .kernel import install
    from .magics import register
    register(ipython)
    install()


def _install_kernel_handlers() -> None:
    """Notices, progress lines and the session name go through IPython when there is a shell (nb_model.kernel)."""
    from .kernel import install
    install()


_install_kernel_handlers()


def _jupyter_server_extension_points():
    return [{"module": "nb_model.server"}]


def _jupyter_labextension_paths():
    """The prebuilt JupyterLab extension (built from src/ into nb_model/labextension)."""
    return [{"src": "labextension", "dest": "nb_model"}]
