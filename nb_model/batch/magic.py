"""`%%generate --over VAR`: the cell's template once per item of a list or Series, through generate_many."""
from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import ConfigError


def pack_option(value):
    """--pack N|auto as generate_many's `pack=` (None when not given); one line for anything else."""
    from IPython.core.error import UsageError

    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--pack takes a number of prompts per request or auto, got {value!r}") from None


def run_magic(settings, args, cell: str, *, ns: dict, store: Callable[[Any], None]) -> None:
    """Run the items; a compact table; results in --out. `settings`: the cell's merged options; `ns`: the
    notebook's variables; `store` keeps the results."""
    from IPython.core.error import UsageError

    from ..display.batch import show_over_summary
    from .items import items_of
    from .runner import generate_many

    if args.over not in ns:
        raise UsageError(f"--over {args.over}: no variable of that name; define a list or Series first")
    if args.no_interpolate or getattr(args, "chat", None):
        raise UsageError("--over fills the cell from each item: drop --no-interpolate / --chat")
    try:
        items, _ = items_of(ns[args.over])
    except ConfigError as exc:
        raise UsageError(f"--over {args.over}: {exc}") from None
    if not items:
        raise UsageError(f"--over {args.over}: the list is empty, nothing to generate; put prompts or items in it")
    pack = pack_option(getattr(args, "pack", None))
    start = time.perf_counter()
    try:
        results = generate_many(ns[args.over], args.workers, template=cell.strip("\n"), namespace=ns, pack=pack,
                                profile=settings.profile, model=settings.model, system=settings.system,
                                cache=settings.cache, **settings.params)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    store(results)
    show_over_summary(results, time.perf_counter() - start, args.out)
