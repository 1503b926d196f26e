"""Plain-text tables of the line magics (`%generate config`, `cache`, `history`, `usage`, the `--over`
summary): columns aligned by display width, so CJK text (two columns a character) lines up."""
from __future__ import annotations

from ..textwidth import ljust, width


def table_text(rows: list[tuple]) -> str:
    """Each row's cells padded to their column's widest cell, two spaces apart; a line ends at its last
    character (no trailing spaces)."""
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        return ""
    widths = [max(width(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
    return "\n".join("  ".join(ljust(c, w) for c, w in zip(r, widths)).rstrip() for r in cells)


def table(rows: list[tuple]) -> None:
    """Print `table_text(rows)`."""
    print(table_text(rows))
