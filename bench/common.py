"""Helpers for the bench scripts: medians, ratios and a compact table."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median(values):
    return statistics.median(values)


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def paired(fn_a, fn_b, runs: int) -> tuple[list[float], list[float]]:
    """Run A and B alternately (A B A B ...) so machine drift hits both alike."""
    a, b = [], []
    for _ in range(runs):
        a += timed(fn_a, 1)
        b += timed(fn_b, 1)
    return a, b


def process_time(code: str) -> float:
    """Wall time of a fresh Python process running `code`."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
