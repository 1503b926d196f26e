"""`%%generate` and `%generate`: parse options, call the client core, show the result.

Defaults can be set with `%config NbModel.temperature = 0.2` (any of the traits below).
"""
from __future__ import annotations

import functools
import importlib
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import TraitError, observe, validate

from . import params
from .errors import ConfigError, Interrupted, NbModelError
from .out_names import out_name_problem

# Subcommands of the line magic: name -> "module:function(magics, args: list[str])".
SUBCOMMANDS = {
    "config": "nb_model.magics:cmd_config",
    "profiles": "nb_model.magics:cmd_profiles",
    "help": "nb_model.magics:cmd_help",
    "panel": "nb_model.panel:cmd_panel",
    "cache": "nb_model.commands:cmd_cache",
    "history": "nb_model.commands:cmd_history",
    "usage": "nb_model.commands:cmd_usage",
    "chat": "nb_model.commands:cmd_chat",
}


@magics_class
class NbModel(Magics):
    """Cell magic `%%generate` and line magic `%generate SUBCOMMAND`."""

    # profile, model, max_tokens, temperature, top_p, top_k, language, system, format, stream: one trait per
    # row of the parameter table that has one (a class body's locals() is its namespace)
    locals().update(params.traits())

    def __init__(self, shell=None, **kwargs) -> None:
        super().__init__(shell=shell, **kwargs)
        self._loaded = True  # from now on %config values are checked (a config file's are not: see below)

    @validate("profile")
    def _known_profile(self, proposal) -> str | None:
        """Refuse an unknown profile set with %config. A value from a config file is taken as is, at load:
        it may name a profile that exists only later (relay:…), and a bad one is reported by each cell."""
        from .config import resolve_profile
        if proposal.value and self.__dict__.get("_loaded"):
            try:
                resolve_profile(proposal.value)
            except ConfigError as exc:
                hint = " (the local model comes with: pip install 'nb_model[local]')" if proposal.value == "local" else ""
                raise TraitError(f"{exc}{hint}") from None
        return proposal.value

    @observe("profile")
    def _profile_changed(self, change) -> None:
        from .config import set_session_profile
        set_session_profile(change.new)

    @magic_arguments()
    @params.table_arguments  # -p, -m, --max-tokens, -t, --top-p, --top-k, --language, --seed, -s, -f
    @argument("-o", "--out", metavar="VAR", help="store the Generation in this variable")
    @argument("--no-stream", action="store_true", dest="no_stream", help="wait for the whole answer")
    @argument("--no-interpolate", action="store_true", dest="no_interpolate", help="send {braces} as written")
    @argument("--refresh", action="store_true", help="call the model again and replace the cached answer")
    @argument("--no-cache", action="store_true", dest="no_cache", help="neither read nor write the cache")
    @argument("--chat", nargs="?", const="default", metavar="NAME",
              help="continue the conversation NAME (default: 'default'); see %%generate chat show|reset")
    @argument("--compare", metavar="SPEC",
              help='run 2-4 variants side by side, e.g. "temperature=0.2,0.8; top_p=0.5,1" (also top_k, '
                   'max_tokens, seed, language, model, profile; system=a|b, prompt=a|b, or any {name} '
                   'of the prompt: topic=rain|snow); --out stores the list of Generations')
    @argument("--over", metavar="VAR",
              help="run the cell once per item of this list/Series variable ({item}, or {key} of dict "
                   "items) through generate_many; --out stores the results; a summary table is shown")
    @argument("--tools", metavar="NAMES",
              help="functions of the notebook the model may call, comma-separated (each call is shown); "
                   "see nb_model.tool")
    @argument("--max-steps", type=int, default=5, dest="max_steps",
              help="with --tools: model requests at most (default 5)")
    @argument("--confirm", action="store_true", help="with --tools: ask before running each call")
    @argument("--tool-timeout", type=float, default=30.0, dest="tool_timeout", metavar="S",
              help="with --tools: seconds a call may run (default 30)")
    @argument("--context", metavar="PATH|VAR",
              help="answer from these documents (a file, a folder, or a variable: list of strings, pandas "
                   "Series/DataFrame, nb_model.Index), citing the passages used")
    @argument("--k", type=int, help="with --context: how many passages to retrieve (default 5)")
    @argument("--workers", type=int, default=None,
              help="with --over: most requests in flight (default: as the rate limit and latency need, ≤ 64)")
    @argument("--pack", metavar="N|auto", default=None,
              help="with --over: up to N short prompts per request (or auto), split back per item")
    @argument("--schema", metavar="SPEC",
              help='answer as JSON of this schema: "sentiment:pos|neg, price:float, product:str", inline JSON '
                   "Schema, or a variable (field dict, JSON Schema, pydantic model); with --over: a DataFrame")
    @argument("--score", metavar="SCORE",
              help="with --over VAR --compare SPEC: evaluate the variants over the rows, e.g. exact:label "
                   "(also contains:COL, regex:P, json_valid, schema_valid, length[:N], or a function variable)")
    @argument("subcommand", nargs="*", help="line magic only: config | profiles | help | ...")
    @line_cell_magic
    def generate(self, line: str = "", cell: str | None = None):
        """Generate text from the cell body (the prompt); `{name}` is filled from your variables.

        As a line magic: `%generate config`, `%generate profiles`, `%generate help`, ...
        """
        if cell is None:
            return self._subcommand(line)
        try:
            args = self.generate.parser.parse_args(shlex.split(line))
        except ValueError as exc:  # shlex: an unclosed quote
            raise UsageError(f"cannot read the options: {exc} (quote values like -s \"Don't ramble\")") from None
        except UsageError as exc:
            raise UsageError(f"{exc} (see %%generate? for the options)") from None
        if args.subcommand:
            raise UsageError(f"unexpected words {' '.join(args.subcommand)!r} after %%generate: "
                             "options start with - (see %%generate?)")
        if args.out and out_name_problem(args.out):
            raise UsageError(out_name_problem(args.out))
        if args.refresh and args.no_cache:
            raise UsageError("use either --refresh or --no-cache, not both")
        args.cache = "refresh" if args.refresh else "off" if args.no_cache else "use"
        if args.chat is not None and not args.chat.strip():
            raise UsageError("--chat needs a conversation name, e.g. --chat notes (or --chat alone for 'default')")
        if args.tools is not None and args.context is not None:
            raise UsageError("use either --tools or --context, not both")
        settings = params.cell_settings(args, self)
        ns = self.shell.user_ns
        store = functools.partial(self._store, args)
        if args.tools is not None:
            from .chat import conversation
            from .tools.magic import run_magic as run_tools
            return run_tools(settings, args, cell, ns=ns, chats=functools.partial(conversation, self.shell),
                             store=store)
        if args.k is not None and args.context is None:
            raise UsageError("--k needs --context (the documents to retrieve from)")
        if args.k is not None and args.k < 1:
            raise UsageError(f"--k must be at least 1, got {args.k}")
        if args.context is not None:
            from .chat import conversation
            from .retrieval.magic import run_magic as run_grounded
            return run_grounded(settings, args, cell, ns=ns, chats=functools.partial(conversation, self.shell),
                                answer=lambda prompt: self._run(settings, args, prompt, None))
        if args.schema or args.score:
            from .datasets.magic import run_magic as run_dataset
            return run_dataset(settings, args, cell, ns=ns, store=store)
        if args.compare is not None:
            from .compare import run_magic
            return run_magic(settings, args, cell, ns=ns, store=store)
        if args.over:
            from .batch.magic import run_magic as run_over
            return run_over(settings, args, cell, ns=ns, store=store)
        self._run(settings, args, cell, None if args.no_interpolate else ns)

    # -- the cell -------------------------------------------------------
    def _run(self, settings: params.Settings, args, cell: str, namespace) -> Any:
        """Stream one answer into the cell's output, then its footer; returns the Generation."""
        from .chat import conversation
        from .client import client_for
        from .display import LiveOutput, show_footer, show_notice
        from .template import cell_prompt

        try:
            chat = conversation(self.shell, args.chat) if args.chat else None
            prompt = cell_prompt(cell, namespace)
            client = client_for(settings.profile, model=settings.model)
            stream = client.stream(prompt, system=settings.system, messages=chat.messages() if chat else None,
                                   cache=settings.cache, stream=settings.stream, on_retry=show_notice,
                                   **settings.params)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        live = LiveOutput(settings.format)
        deltas = iter(stream)
        try:
            try:
                for delta in deltas:
                    live.write(delta)
            except KeyboardInterrupt:  # landed outside the stream's read: hand it to the stream's own handling
                try:
                    deltas.throw(KeyboardInterrupt)
                except KeyboardInterrupt:  # the stream had already ended (or replayed the cache)
                    raise Interrupted("stopped by user; the text above is complete", partial=stream.generation) \
                        from None
        except NbModelError as exc:
            gen = getattr(exc, "partial", None) or stream.generation
            live.finish(gen)
            if gen.text:
                show_footer(gen, cap=client.profile.max_tokens_cap)
            self._store(args, gen)
            raise
        gen = stream.generation
        live.finish(gen)
        from .config.env import footer_note
        show_footer(gen, cap=client.profile.max_tokens_cap, note=None if gen.cached else footer_note(gen.profile))
        if chat:
            chat.add(prompt, gen)
        self._store(args, gen)
        return gen

    def _store(self, args, gen) -> None:
        self.last_generation = gen
        if args.out:  # a valid name: checked before anything was sent
            self.shell.user_ns[args.out] = gen

    # -- the line magic -------------------------------------------------
    def _subcommand(self, line: str):
        words = line.split()
        name = words[0] if words else "help"
        if name not in SUBCOMMANDS:
            raise UsageError(f"unknown subcommand {name!r}: use one of {', '.join(sorted(SUBCOMMANDS))}")
        module, func = SUBCOMMANDS[name].split(":")
        try:
            return getattr(importlib.import_module(module), func)(self, words[1:])
        except ConfigError as exc:
            raise UsageError(str(exc)) from None


def cmd_config(magics: NbModel, args: list[str]) -> None:
    """Effective settings: profile, endpoint, protocol, model, limits, key set/unset."""
    from .config import resolve_profile
    from .display.table import table
    profile = resolve_profile(magics.profile)
    rows = [("profile", profile.name)] + [(k, str(v)) for k, v in profile.summary().items() if k != "name"]
    rows += params.config_rows(magics)
    table(rows)


def cmd_profiles(magics: NbModel, args: list[str]) -> None:
    """Known profiles; the default is marked with *."""
    from .config import default_profile_name, load_profiles, profiles_path, redact_url
    from .display.table import table
    profiles, file_default = load_profiles()
    default = magics.profile or default_profile_name(profiles, file_default)
    rows = []
    for name in sorted(profiles):
        p = profiles[name]
        mark = "*" if name == default else " "
        where = redact_url(p.endpoint) if p.endpoint else "embedded sandbox"
        rows.append((f"{mark} {name}", f"{p.protocol:18} {p.model or '-':14} {where}"))
    table(rows)
    print(f"profiles file: {profiles_path() or 'none (set NB_MODEL_CONFIG or create nb_model.toml)'}")


def cmd_help(magics: NbModel, args: list[str]) -> None:
    """This list."""
    from .display.table import table
    rows = []
    for name in sorted(SUBCOMMANDS):
        module, func = SUBCOMMANDS[name].split(":")
        doc = (getattr(importlib.import_module(module), func).__doc__ or "").strip().splitlines()
        rows.append((f"%generate {name}", doc[0] if doc else ""))
    rows.append(("%%generate [options]", "generate from the cell body; %%generate? lists the options"))
    table(rows)


def register(ipython) -> None:
    """Register the magics and make `%config NbModel.x = ...` work (imports nothing heavier)."""
    magics = NbModel(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
