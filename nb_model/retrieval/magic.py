"""`%%generate --context PATH|VAR --k N`: retrieve, answer through the usual cell path, show citations."""
from __future__ import annotations

import os
from typing import Any, Callable

from IPython.core.error import UsageError

from ..errors import ConfigError


def resolve_context(ns: dict, value: str):
    """The variable named `value` if the notebook has one, else the path `value`; one line if neither."""
    name = value.strip()
    if not name:
        raise UsageError("--context needs a file or folder path, or a variable name")
    if name.isidentifier() and name in ns:
        return ns[name]
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return path
    if name.isidentifier():
        raise UsageError(f"--context {name}: no variable and no file or folder of that name")
    raise UsageError(f"--context: no such file or folder: {name!r}")


def run_magic(settings, args, cell: str, *, ns: dict, chats: Callable[[str], Any], answer: Callable[[str], Any]):
    """Retrieve passages for the cell's question, then `answer(prompt)` (the ordinary cell path: streamed,
    footer, --out; returns the Generation) and show the citations under it. `chats(name)`: the
    conversation of --chat NAME (its earlier turns take their share of the context window)."""
    from ..client import client_for
    from ..display import show_notice
    from ..display.citations import show_citations
    from ..template import cell_prompt
    from . import as_index, ground

    if args.compare is not None or args.over:
        raise UsageError("--context cannot be combined with --compare or --over")
    context = resolve_context(ns, args.context)
    try:
        question = cell_prompt(cell, None if args.no_interpolate else ns)
        client = client_for(settings.profile, model=settings.model)
        index = as_index(context)
        for warning in index.warnings:
            show_notice(f"nb_model: {warning}")
        history = chats(args.chat).messages() if args.chat else None
        prompt, passages = ground(client, question, index, k=args.k, system=settings.system,
                                  max_tokens=settings.params["max_tokens"], history=history)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    gen = answer(prompt)  # the question was filled already; passages are sent as written
    if gen is not None:
        gen.passages = passages
        show_citations(gen.text, passages)
