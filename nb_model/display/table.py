"""Printing the plain-text tables of the line magics (`textwidth.table` lays them out by display width)."""
from __future__ import annotations

from ..textwidth import table as table_text


def table(rows: list[tuple]) -> None:
    """Print `rows` as columns aligned by display width (CJK text takes two columns a character)."""
    print(table_text(rows))
