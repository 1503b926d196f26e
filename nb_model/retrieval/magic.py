"""`%%generate --context PATH|VAR --k N`: retrieve, answer through the usual cell path, show citations."""
from __future__ import annotations

import os

from IPython.core.error import UsageError

from ..errors import ConfigError


def resolve_context(shell, value: str):
    """The variable named `value` if the notebook has one, else the path `value`; one line if neither."""
    name = value.strip()
    if not name:
        raise UsageError("--context needs a file or folder path, or a variable name")
    if name.isidentifier() and name in shell.user_ns:
        return shell.user_ns[name]
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return path
    if name.isidentifier():
        raise UsageError(f"--context {name}: no variable and no file or folder of that name")
    raise UsageError(f"--context: no such file or folder: {name!r}")


def run_magic(magics, args, cell: str):
    from ..chat import conversation
    from ..client import client_for
    from ..display import show_notice
    from . import as_index, ground
    from IPython.display import display

    from .prompt import citations_bundle

    if args.compare is not None or args.over:
        raise UsageError("--context cannot be combined with --compare or --over")
    context = resolve_context(magics.shell, args.context)
    try:
        question = magics.prompt(args, cell)
        client = client_for(args.profile or magics.profile, model=args.model or magics.model)
        index = as_index(context)
        for warning in index.warnings:
            show_notice(f"nb_model: {warning}")
        history = conversation(magics.shell, args.chat).messages() if args.chat else None
        prompt, passages = ground(client, question, index, k=args.k, system=args.system or magics.system,
                                  max_tokens=magics.params(args)["max_tokens"], history=history)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    args.no_interpolate = True  # the question was filled already; passages are sent as written
    magics.last_generation = None
    magics.run_cell(args, prompt)
    gen = magics.last_generation
    if gen is not None:
        gen.passages = passages
        display(citations_bundle(gen.text, passages), raw=True)
