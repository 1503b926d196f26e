"""Token estimation for every language: the one place nb_model guesses a token count.

Used wherever a count is needed before (or without) the server's own: the context-window check, cost when a
server reports no usage, chunk sizes of `split_text`/`summarize_long`, chat context checks, and the relay's quota
reservation. Limits and quotas need a guess that is rarely *below* the real count, so every character class is
counted on the generous side of what common tokenizers (SentencePiece/BPE vocabularies) do:

* CJK ideographs, kana and hangul: one token each;
* digits: one token each (most vocabularies split numbers into digits);
* punctuation and symbols: one token each;
* Latin (and other alphabetic) words: one token per started 4 letters;
* whitespace runs: free after a word, one token per run of indentation (code).

Hand-written rather than a tokenizer library: a real tokenizer needs a vocabulary file per model (megabytes,
from a model hub), and the estimate must work for any server and at import cost zero.
"""
from __future__ import annotations

import re

# one alternative per character class; order matters (CJK before \w, which matches ideographs too)
_PIECES = re.compile(
    r"(?P<cjk>[\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    r"\U00020000-\U0003134f])"
    r"|(?P<digit>\d)"
    r"|(?P<word>[^\W\d_]+)"
    r"|(?P<indent>\n[ \t]{2,})"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.S,
)


def estimate_tokens(text: str) -> int:
    """A conservative, character-class aware token estimate of `text` (0 for empty text)."""
    if not text:
        return 0
    n = 0
    for m in _PIECES.finditer(text):
        kind = m.lastgroup
        if kind == "word":
            n += (len(m.group()) + 3) // 4
        elif kind != "space":
            n += 1
    return n
