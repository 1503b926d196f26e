"""`%%generate --tools NAMES [--max-steps N] [--confirm] [--tool-timeout S]`."""
from __future__ import annotations

from IPython.core.error import UsageError

from ..errors import ConfigError, NbModelError


def run_magic(magics, args, cell: str):
    from ..chat import conversation
    from ..client import client_for
    from ..display import LiveOutput, show_footer, show_notice
    from . import from_names
    from .loop import run_tools
    from .view import NotebookView

    for option in ("compare", "over"):
        if getattr(args, option, None):
            raise UsageError(f"--tools cannot be combined with --{option}: run the tool exchange on its own")
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.tool_timeout is not None and args.tool_timeout <= 0:
        raise UsageError(f"--tool-timeout must be a positive number of seconds, got {args.tool_timeout:g}")
    fmt = args.format or magics.format
    try:
        chat = conversation(magics.shell, args.chat) if args.chat else None
        tools = from_names(args.tools, magics.shell.user_ns)
        prompt = magics.prompt(args, cell)
        client = client_for(args.profile or magics.profile, model=args.model or magics.model)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    live = LiveOutput(fmt)
    try:
        gen = run_tools(client, prompt, tools, system=args.system or magics.system,
                        messages=chat.messages() if chat else None, cache=args.cache,
                        stream=magics.stream and not args.no_stream, max_steps=args.max_steps,
                        timeout=args.tool_timeout, confirm=args.confirm, view=NotebookView(live),
                        on_retry=show_notice, **magics.params(args))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except NbModelError as exc:
        gen = getattr(exc, "partial", None)
        if gen is not None:
            live.finish(gen)
            show_footer(gen, cap=client.profile.max_tokens_cap)
            magics._store(args, gen)
        raise
    live.finish(gen)
    show_footer(gen, cap=client.profile.max_tokens_cap)
    if chat:
        chat.add(prompt, gen)
    magics._store(args, gen)
