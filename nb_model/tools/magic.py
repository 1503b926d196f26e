"""`%%generate --tools NAMES [--max-steps N] [--confirm] [--tool-timeout S]`."""
from __future__ import annotations

from typing import Any, Callable

from IPython.core.error import UsageError

from ..errors import ConfigError, NbModelError


def run_magic(settings, args, cell: str, *, ns: dict, chats: Callable[[str], Any],
              store: Callable[[Any], None]):
    """Run a tool exchange for the cell: `settings` (the merged options), `ns` (the notebook's variables),
    `chats(name)` (the conversation of --chat NAME), `store` (keeps the result, e.g. in --out)."""
    from ..client import client_for
    from ..display import LiveOutput, show_footer, show_notice
    from ..display.tools import NotebookView
    from ..template import cell_prompt
    from . import from_names
    from .loop import run_tools

    for option in ("compare", "over"):
        if getattr(args, option, None):
            raise UsageError(f"--tools cannot be combined with --{option}: run the tool exchange on its own")
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.tool_timeout is not None and args.tool_timeout <= 0:
        raise UsageError(f"--tool-timeout must be a positive number of seconds, got {args.tool_timeout:g}")
    try:
        chat = chats(args.chat) if args.chat else None
        tools = from_names(args.tools, ns)
        prompt = cell_prompt(cell, None if args.no_interpolate else ns)
        client = client_for(settings.profile, model=settings.model)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    live = LiveOutput(settings.format)
    try:
        gen = run_tools(client, prompt, tools, system=settings.system,
                        messages=chat.messages() if chat else None, cache=settings.cache,
                        stream=settings.stream, max_steps=args.max_steps,
                        timeout=args.tool_timeout, confirm=args.confirm, view=NotebookView(live),
                        on_retry=show_notice, **settings.params)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except NbModelError as exc:
        gen = getattr(exc, "partial", None)
        if gen is not None:
            live.finish(gen)
            show_footer(gen, cap=client.profile.max_tokens_cap)
            store(gen)
        raise
    live.finish(gen)
    show_footer(gen, cap=client.profile.max_tokens_cap)
    if chat:
        chat.add(prompt, gen)
    store(gen)
