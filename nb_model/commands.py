"""The line magic's subcommands: `%generate cache …`, `history [N]`, `usage` and `chat …`."""
from __future__ import annotations

import math
import time

from IPython.core.error import UsageError

from . import textwidth
from .cache import location, router
from .chat import DEFAULT, conversations
from .config import redact_url

CACHE_USAGE = "%generate cache stats | list [N] | clear [--older-than DAYS] | path | --file PATH|DIR|off|auto"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _table(rows: list[tuple]) -> None:
    print(textwidth.table(rows))


def _count(words: list[str], default: int) -> int:
    if not words:
        return default
    if len(words) > 1 or not words[0].isdigit() or int(words[0]) < 1:
        raise UsageError(f"expected a positive number of rows, got {' '.join(words)!r}")
    return int(words[0])


def _entries_store(magics):
    from .client import client_for
    from .errors import ConfigError
    try:
        cache = client_for(magics.profile).cache
    except ConfigError:
        cache = router.CacheRouter()
    return cache.entries_store() if isinstance(cache, router.CacheRouter) else router.local_store()


def _no_more(words: list[str], usage: str) -> None:
    if words:
        raise UsageError(f"unexpected {' '.join(words)!r}: use {usage}")


def _days(words: list[str]) -> float | None:
    """The seconds of `--older-than DAYS` (None: no option)."""
    if not words:
        return None
    if len(words) != 2 or words[0] != "--older-than":
        raise UsageError("use %generate cache clear [--older-than DAYS]")
    try:
        days = float(words[1])
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise UsageError(f"--older-than needs a number of days (0 or more), got {words[1]!r}")
    return days * 86400


def _unreachable(store) -> str | None:
    """The line to print instead of a result when the store is a Redis server that does not answer."""
    if getattr(store, "kind", None) != "redis" or store.reachable():
        return None
    return f"the Redis cache at {redact_url(store.url)} is unreachable: generation continues uncached"


def _use_file(value: str) -> None:
    """`--file PATH|DIR|off|auto`: switch this session's cache file and say where it is now."""
    store = router.use_file(value)
    path, why = location.sqlite_path()
    if path is None:
        print("cache file: none, caching and history on disk are off (%generate cache --file auto turns them on)")
    elif store is None:
        print(f"cache file: {path} (unusable: caching is off)")
    else:
        print(f"cache file: {path}" + ("" if why.startswith("%generate") else f" ({why})"))


def cmd_cache(magics, words: list[str]) -> None:
    """The cache: stats | list [N] | clear [--older-than DAYS] | path | --file PATH|DIR|off|auto.

    `--file` picks this session's cache file: a file, a folder (its cache.sqlite), off (no cache
    file), or auto (back to the file beside the notebook), like env NB_MODEL_CACHE.
    """
    sub, rest = (words[0], words[1:]) if words else ("stats", [])
    if sub == "--file":
        value = " ".join(rest).strip("'\"")
        if not value:
            raise UsageError("give the cache file: %generate cache --file PATH|DIR|off|auto")
        _use_file(value)
        return
    if sub not in ("stats", "list", "clear", "path"):
        raise UsageError(f"unknown cache command {sub!r}: use {CACHE_USAGE}")
    if sub in ("stats", "path"):
        _no_more(rest, f"%generate cache {sub}")
    count = _count(rest, 20) if sub == "list" else None
    older = _days(rest) if sub == "clear" else None
    if sub == "path":
        path, why = location.sqlite_path()
        store = _entries_store(magics)
        down = " (unreachable: generation continues uncached)" if _unreachable(store) else ""
        _table([("history file", f"{path or 'none'}  ({why})"),
                ("entries in", store.describe() + down if store is not None else "nowhere: caching is off")])
        return
    store = _entries_store(magics)
    down = _unreachable(store)
    if down:
        print(down)
        return
    if sub == "stats":
        info = store.stats() if store is not None else {"entries": 0, "bytes": 0, "oldest": None, "newest": None}
        log = router.session
        _table([("store", store.describe() if store is not None else "none: caching is off"),
                ("entries", info["entries"]), ("size", _size(info["bytes"])),
                ("oldest / newest", f"{_when(info['oldest'])} / {_when(info['newest'])}"),
                ("this session", f"{log.hits} hits, {log.misses} misses")])
    elif sub == "list":
        rows = store.entries(count) if store is not None else []
        if not rows:
            print("the cache is empty")
            return
        _table([("created", "model", "prompt")] +
               [(_when(r["created"]), r["model"] or "-", r["prompt_head"] or "") for r in rows])
    else:
        removed = store.clear(older) if store is not None else 0
        print(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'}")


def _tokens(row: dict) -> str:
    """`12→40`, or `~12→~40` when the counts are nb_model's estimates."""
    mark = "~" if row.get("usage_estimated") else ""
    return f"{mark}{row['prompt_tokens']}→{mark}{row['completion_tokens']}"


def _approx(count: int, totals: dict) -> str:
    return f"~{count}" if totals.get("estimated") else str(count)


def cmd_history(magics, words: list[str]) -> None:
    """The last N generations of this notebook (default 10)."""
    rows = router.recent_history(_count(words, 10))
    if not rows:
        print("no generations yet")
        return
    def head(text, n=40):
        return textwidth.shorten(" ".join((text or "").split()), n)
    _table([("time", "model", "tokens", "latency", "finish", "prompt", "answer")] + [
        (_when(r["time"]), r["model"] or r["profile"] or "-", _tokens(r),
         f"{r['latency_s']:.2f} s" if r["latency_s"] is not None else "-",
         "cached" if r["cached"] else (r["finish_reason"] or ""), head(r["prompt"]), head(r["text"] or r["error"]))
        for r in rows])


def cmd_usage(magics, words: list[str]) -> None:
    """Tokens in/out and estimated cost, this session and for the whole notebook."""
    _no_more(words, "%generate usage")
    scopes = [("this session", router.session.usage())]
    local = router.local_store()
    if local is not None:
        scopes.append(("whole notebook", router.usage_totals(local.usage_rows())))
    _table([("scope", "calls", "cached", "tokens in", "tokens out", "cost", "saved by cache")] + [
        (name, t["calls"], t["hits"], _approx(t["in"], t), _approx(t["out"], t), f"${t['cost']:.4f}",
         f"${t['saved']:.4f}")
        for name, t in scopes])
    print("cost estimated from each profile's price_per_1m (set it in nb_model.toml; 0 for local models)")
    from .config.env import usage_lines
    for line in usage_lines():  # a JupyterHub relay service: what is left today
        print(line)
    if any(t.get("estimated") for _, t in scopes):
        print("~: includes token counts estimated by nb_model (the server reported no usage)")


def cmd_chat(magics, words: list[str]) -> None:
    """Conversations of %%generate --chat: chat [list] | show [NAME] | reset [NAME]."""
    sub, rest = (words[0], words[1:]) if words else ("list", [])
    if len(rest) > 1 or sub not in ("list", "show", "reset"):
        raise UsageError("use %generate chat list | show [NAME] | reset [NAME]")
    chats = conversations(magics.shell)
    if sub == "list":
        if not chats:
            print("no conversations yet: start one with %%generate --chat [NAME]")
        for chat in chats.values():
            print(f"{chat.name}: {len(chat.turns) // 2} turns")
        return
    name = rest[0] if rest else DEFAULT
    chat = chats.get(name)
    if chat is None:
        known = f"chats: {', '.join(chats)}" if chats else "no chats yet: start one with %%generate --chat [NAME]"
        raise UsageError(f"there is no chat named {name!r} ({known})")
    if sub == "reset":
        chat.reset()
        print(f"chat {name!r} reset")
        return
    if not chat.turns:
        print(f"chat {name!r} is empty")
        return
    for m in chat.turns:
        print(f"[{m['role']}] {m['content']}")
