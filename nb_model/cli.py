"""``nb-model`` command line.

``nb-model serve`` runs the sandbox API until Ctrl-C; ``nb-model demo NOTEBOOK``
executes a notebook headless on the embedded default and prints what each cell showed;
``nb-model relay --config relay.toml`` runs the key-holding relay as a JupyterHub service or a plain server.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Sequence

from nb_model.sandbox import ENGINES  # the engine registry (names); engines load on use


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nb-model", description="Tools for nb_model (notebook magics for text-generation APIs).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve a simulated text-generation API (seed + OpenAI protocols)",
        description="Serve a text-generation API on HTTP until Ctrl-C.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 = any free port)")
    serve.add_argument("--api-key-env", metavar="NAME",
                       help="require 'Authorization: Bearer <key>', the key read from env var NAME "
                            "(default: no auth)")
    serve.add_argument("--qps", type=float, default=20.0,
                       help="requests per second before 429 (default: 20; 0 = no limit)")
    serve.add_argument("--token-rate", type=float, default=0.0,
                       help="tokens per second while generating (default: 0 = as fast as possible)")
    serve.add_argument("--engine", default="sandbox",
                       help=f"text engine: {', '.join(ENGINES)} (default: sandbox)")
    serve.add_argument("--wire", choices=("full", "minimal"), default="full",
                       help="seed replies: full (model, usage, finish) or minimal (exactly the documented "
                            "{\"output\"} and {\"text\"} lines, nothing more)")
    serve.add_argument("--verbose", action="store_true", help="log each request (never headers)")
    demo = commands.add_parser(
        "demo", help="run a notebook headless and print its outputs",
        description="Execute a copy of NOTEBOOK in a fresh kernel (the notebook file is not changed) "
                    "and print each cell's text output as it finishes.")
    demo.add_argument("notebook", help="path of the .ipynb to run")
    demo.add_argument("--timeout", type=int, default=300, help="seconds per cell (default: 300)")
    relay = commands.add_parser(
        "relay", help="run the key-holding relay as its own process (a JupyterHub service or a plain server)",
        description="Relay notebooks' requests to the upstreams of a TOML config, holding their keys, with "
                    "per-user and per-group limits and a usage page. Under JupyterHub (as a service) callers "
                    "are Hub users; see docs/classroom.md.")
    relay.add_argument("--config", required=True, metavar="TOML", help="the relay's config file")
    relay.add_argument("--host", help="address to bind (default: from $JUPYTERHUB_SERVICE_URL, else 127.0.0.1)")
    relay.add_argument("--port", type=int, help="port (default: from $JUPYTERHUB_SERVICE_URL, else 10101)")
    return parser


def _fail(message: str) -> int:
    print(f"nb-model: {message}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace) -> int:
    """Run the sandbox server in the foreground; returns the exit code."""
    from nb_model.sandbox import SandboxServer, make_engine

    if args.engine not in ENGINES:
        return _fail(f"unknown engine {args.engine!r} (known: {', '.join(ENGINES)})")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            return _fail(f"environment variable {args.api_key_env} is not set (it should hold the API key)")
    engine = make_engine(args.engine)
    if hasattr(engine, "load"):  # a real model: wait until it is ready to serve
        print(f"loading the model {engine.model} ...", flush=True)
        try:
            engine.load(wait=True)
        except RuntimeError as exc:
            return _fail(str(exc))
    try:
        server = SandboxServer(host=args.host, port=args.port, api_key=api_key, qps=args.qps,
                               token_rate=args.token_rate, engine=engine,
                               quiet=not args.verbose, wire=args.wire).start()
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"nb_model sandbox serving model {server.engine.model!r} at {server.url} "
          "(seed: /v1/generate, openai: /v1/chat/completions)"
          + (", seed replies as documented (--wire minimal)" if args.wire == "minimal" else ""), flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM exits like Ctrl-C
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def relay(args: argparse.Namespace) -> int:
    """Run the relay service in the foreground (see `nb_model.server.hub`)."""
    import sqlite3

    from nb_model.errors import ConfigError
    from nb_model.server.hub import main as run_relay

    try:
        return run_relay(args.config, args.host, args.port)
    except ConfigError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return _fail(f"cannot start the relay: {exc.strerror or exc}{where}")
    except sqlite3.Error as exc:  # the [relay] db file: a folder the service's user cannot write
        return _fail(f"cannot open the relay's database ([relay] db in {args.config}): {exc}")


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return f"{output.get('ename')}: {output.get('evalue')}\n"
    data = output.get("data", {})
    for mime in ("text/plain", "text/markdown"):
        if mime in data:
            text = data[mime]
            return (text if isinstance(text, str) else "".join(text)) + "\n"
    return ""


def demo(args: argparse.Namespace) -> int:
    """Execute a notebook copy with nbclient, printing each code cell and its outputs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    try:
        nb = nbformat.read(args.notebook, as_version=4)
    except OSError as exc:
        return _fail(f"cannot read {args.notebook}: {exc.strerror or exc}")

    def show(cell, cell_index, execute_reply=None, **_):
        if cell.cell_type != "code":
            return
        print(f"\n[{cell_index}] " + cell.source.splitlines()[0] if cell.source else "", flush=True)
        for output in cell.outputs:
            sys.stdout.write(_output_text(output))
        sys.stdout.flush()

    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(args.notebook))}},
                            on_cell_executed=show)
    try:
        client.execute()
    except CellExecutionError as exc:
        return _fail(f"a cell failed: {str(exc).splitlines()[-1] if str(exc) else exc}")
    print(f"\n{args.notebook}: all cells ran", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "demo":
        return demo(args)
    if args.command == "relay":
        return relay(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
