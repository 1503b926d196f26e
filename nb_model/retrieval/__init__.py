"""Grounded answers: retrieve passages from local documents, answer from them, cite them.

    idx = nb_model.Index("docs/")             # BM25 over .txt .md .rst .py .ipynb .csv (.pdf with pypdf)
    idx.search("termination notice", k=5)     # -> [Passage(...), ...], best first
    nb_model.generate(question, context=idx)  # answer citing [1], [2]; .passages holds what was sent

    %%generate --context docs/ --k 5
    What does the contract say about termination notice?

Nothing here is imported by `%load_ext nb_model`; BM25 (`bm25s`, numpy) loads on the first search.
"""
from __future__ import annotations

from ..errors import ConfigError
from .index import Index, Passage, as_index
from .prompt import build_prompt, cited

__all__ = ["Index", "Passage", "as_index", "build_prompt", "cited", "ground", "DEFAULT_K"]

DEFAULT_K = 5


def ground(client, question: str, context, *, k: int | None = None, system: str | None = None,
           max_tokens: int | None = None, history: list[dict] | None = None) -> tuple[str, list[Passage]]:
    """(grounded prompt, passages in it) for `question` over `context` within `client`'s context window;
    `history`: the earlier turns of a chat, sent with it (they take their share of the window)."""
    k = DEFAULT_K if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a whole number of passages, at least 1; got {k!r}")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty: write it in the cell body (or pass prompt=...)")
    index = as_index(context)
    passages = index.search(question, k=k)
    limit = max_tokens or client.profile.defaults.get("max_tokens")
    return build_prompt(question, passages, window=client.profile.context_window, max_tokens=limit,
                        system=system, history=history)


def generate(client, question: str, context, *, k: int | None = None, system: str | None = None, **params):
    """`client.generate` on the grounded prompt; the Generation gets `.passages` (numbered from 1)."""
    prompt, passages = ground(client, question, context, k=k, system=system, max_tokens=params.get("max_tokens"))
    gen = client.generate(prompt, system=system, **params)
    gen.passages = passages
    return gen
