"""``nb-model`` command line: ``nb-model serve`` runs the sandbox API until Ctrl-C."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Callable, Sequence


def _sandbox_engine(args: argparse.Namespace):
    from nb_model.sandbox import SimulatedEngine

    return SimulatedEngine()


# Engine name -> factory(args). A real-model engine (e.g. "llama") registers here.
ENGINES: dict[str, Callable[[argparse.Namespace], object]] = {"sandbox": _sandbox_engine}


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
    serve.add_argument("--verbose", action="store_true", help="log each request (never headers)")
    return parser


def _fail(message: str) -> int:
    print(f"nb-model: {message}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace) -> int:
    """Run the sandbox server in the foreground; returns the exit code."""
    from nb_model.sandbox import SandboxServer

    factory = ENGINES.get(args.engine)
    if factory is None:
        return _fail(f"unknown engine {args.engine!r} (known: {', '.join(ENGINES)})")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            return _fail(f"environment variable {args.api_key_env} is not set (it should hold the API key)")
    try:
        server = SandboxServer(host=args.host, port=args.port, api_key=api_key, qps=args.qps,
                               token_rate=args.token_rate, engine=factory(args),
                               quiet=not args.verbose).start()
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"nb_model sandbox serving model {server.engine.model!r} at {server.url} "
          "(seed: /v1/generate, openai: /v1/chat/completions)", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM exits like Ctrl-C
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
