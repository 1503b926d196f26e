"""Display width of text in a monospace terminal or notebook output: CJK characters take two columns.

`unicodedata.east_asian_width` (stdlib) rather than the `wcwidth` package: the tables only need wide (W/F)
characters counted twice and combining marks counted zero, which the standard library knows.
"""
from __future__ import annotations

import unicodedata


def char_width(ch: str) -> int:
    """Columns one character takes: 2 for wide/fullwidth, 0 for combining marks and zero-width ones, else 1."""
    if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\u2060\ufeff":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """Columns `text` takes (ASCII: its length)."""
    return len(text) if text.isascii() else sum(char_width(ch) for ch in text)


def ljust(text: str, columns: int) -> str:
    """`text` padded with spaces to `columns` display columns."""
    return text + " " * max(0, columns - width(text))


def shorten(text: str, columns: int) -> str:
    """`text` cut to at most `columns` display columns, ending in "…" when cut."""
    if width(text) <= columns:
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > columns - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def table(rows: list[tuple]) -> str:
    """Rows as plain-text columns aligned by display width, two spaces apart; no line ends in spaces.
    The one table of the line magics (`%generate config`, `cache`, `history`, `usage`, the `--over` summary)."""
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        return ""
    widths = [max(width(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
    return "\n".join("  ".join(ljust(c, w) for c, w in zip(r, widths)).rstrip() for r in cells)
