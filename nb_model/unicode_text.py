"""Text that cannot be encoded as UTF-8: lone surrogates.

Python strings may hold unpaired UTF-16 surrogates (U+D800-U+DFFF): a file name from
`os.listdir` that is not valid UTF-8 (decoded with "surrogateescape"), a JSON "\\udce9",
`bytes.decode("utf-8", "surrogateescape")`. They cannot be sent as UTF-8, stored in
SQLite or hashed for a cache key. nb_model replaces each with U+FFFD (the replacement
character) before a prompt is built, and says so once per session in one line.
"""
from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def replace_surrogates(value: Any) -> tuple[Any, int]:
    """(`value` with every lone surrogate replaced by U+FFFD, how many were replaced); walks strings,
    lists and dicts (chat messages)."""
    if isinstance(value, str):
        fixed, n = _SURROGATE.subn(REPLACEMENT, value)
        return fixed, n
    if isinstance(value, list):
        out, total = [], 0
        for item in value:
            fixed, n = replace_surrogates(item)
            out.append(fixed)
            total += n
        return (out, total) if total else (value, 0)
    if isinstance(value, dict):
        out, total = {}, 0
        for key, item in value.items():
            fixed, n = replace_surrogates(item)
            out[key] = fixed
            total += n
        return (out, total) if total else (value, 0)
    return value, 0


def notice_text(n: int) -> str:
    return (f"nb_model: the prompt held {n} character{'s' if n != 1 else ''} that cannot be sent as UTF-8 "
            "(a lone surrogate, e.g. from a file name that is not UTF-8); sent as U+FFFD instead — "
            "decode such text with errors='replace' to choose yourself")
