"""`%generate cache …`, `%generate history [N]` and `%generate usage`."""
from __future__ import annotations

import time

from IPython.core.error import UsageError

from . import location, router

CACHE_USAGE = "%generate cache stats | list [N] | clear [--older-than DAYS] | path | --file PATH"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _table(rows: list[tuple]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells))


def _count(words: list[str], default: int) -> int:
    if not words:
        return default
    if len(words) > 1 or not words[0].isdigit() or int(words[0]) < 1:
        raise UsageError(f"expected a positive number of rows, got {' '.join(words)!r}")
    return int(words[0])


def _entries_store(magics):
    from ..client import client_for
    from ..errors import ConfigError
    try:
        cache = client_for(magics.profile).cache
    except ConfigError:
        cache = router.CacheRouter()
    return cache.entries_store() if isinstance(cache, router.CacheRouter) else router.local_store()


def cmd_cache(magics, words: list[str]) -> None:
    """The cache: stats | list [N] | clear [--older-than DAYS] | path | --file PATH."""
    sub, rest = (words[0], words[1:]) if words else ("stats", [])
    if sub == "--file":
        path = " ".join(rest).strip("'\"")
        if not path:
            raise UsageError("give the cache file: %generate cache --file PATH")
        store = router.use_file(path)
        print(f"cache file: {location.sqlite_path()[0]}" + ("" if store else " (unusable: caching is off)"))
        return
    if sub == "path":
        path, why = location.sqlite_path()
        store = _entries_store(magics)
        _table([("history file", f"{path or 'none'}  ({why})"),
                ("entries in", store.describe() if store is not None else "nowhere: caching is off")])
        return
    store = _entries_store(magics)
    if sub == "stats":
        info = store.stats() if store is not None else {"entries": 0, "bytes": 0, "oldest": None, "newest": None}
        log = router.session
        _table([("store", store.describe() if store is not None else "none: caching is off"),
                ("entries", info["entries"]), ("size", _size(info["bytes"])),
                ("oldest / newest", f"{_when(info['oldest'])} / {_when(info['newest'])}"),
                ("this session", f"{log.hits} hits, {log.misses} misses")])
    elif sub == "list":
        rows = store.entries(_count(rest, 20)) if store is not None else []
        if not rows:
            print("the cache is empty")
            return
        _table([("created", "model", "prompt")] +
               [(_when(r["created"]), r["model"] or "-", r["prompt_head"] or "") for r in rows])
    elif sub == "clear":
        older = None
        if rest:
            if len(rest) != 2 or rest[0] != "--older-than":
                raise UsageError("use %generate cache clear [--older-than DAYS]")
            try:
                older = float(rest[1]) * 86400
            except ValueError:
                raise UsageError(f"--older-than needs a number of days, got {rest[1]!r}") from None
        removed = store.clear(older) if store is not None else 0
        print(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'}")
    else:
        raise UsageError(f"unknown cache command {sub!r}: use {CACHE_USAGE}")


def cmd_history(magics, words: list[str]) -> None:
    """The last N generations of this notebook (default 10)."""
    rows = router.recent_history(_count(words, 10))
    if not rows:
        print("no generations yet")
        return
    def head(text, n=40):
        text = " ".join((text or "").split())
        return text if len(text) <= n else text[:n - 1] + "…"
    _table([("time", "model", "tokens", "seconds", "", "prompt", "answer")] + [
        (_when(r["time"]), r["model"] or r["profile"] or "-", f"{r['prompt_tokens']}→{r['completion_tokens']}",
         f"{r['latency_s']:.2f}" if r["latency_s"] is not None else "-",
         "cached" if r["cached"] else (r["finish_reason"] or ""), head(r["prompt"]), head(r["text"] or r["error"]))
        for r in rows])


def usage_totals(rows) -> dict:
    """Calls, cache hits, tokens in/out and cost of fresh calls, and what hits saved."""
    fresh = [r for r in rows if not r["cached"]]
    return {"calls": len(fresh), "hits": len(rows) - len(fresh),
            "in": sum(r["prompt_tokens"] or 0 for r in fresh), "out": sum(r["completion_tokens"] or 0 for r in fresh),
            "cost": sum(r["cost_usd"] or 0.0 for r in fresh),
            "saved": sum(r["cost_usd"] or 0.0 for r in rows if r["cached"])}


def cmd_usage(magics, words: list[str]) -> None:
    """Tokens in/out and estimated cost, this session and for the whole notebook."""
    scopes = [("this session", usage_totals(router.session.snapshot()))]
    local = router.local_store()
    if local is not None:
        scopes.append(("whole notebook", usage_totals(local.usage_rows())))
    _table([("", "calls", "cached", "tokens in", "tokens out", "cost", "saved by cache")] + [
        (name, t["calls"], t["hits"], t["in"], t["out"], f"${t['cost']:.4f}", f"${t['saved']:.4f}")
        for name, t in scopes])
    print("cost estimated from each profile's price_per_1m (set it in nb_model.toml; 0 for local models)")
