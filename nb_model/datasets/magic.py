"""`%%generate --schema SPEC` (one cell, or `--over VAR` into a DataFrame) and
`%%generate --over VAR --compare SPEC --score SCORE` (an evaluation)."""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError, NbModelError


def _checked(args, ns: dict) -> None:
    from IPython.core.error import UsageError

    if getattr(args, "chat", None):
        raise UsageError("--schema / --score cannot be combined with --chat")
    if args.score and not (args.over and args.compare):
        raise UsageError("--score evaluates variants over rows: use it with --over VAR --compare SPEC")
    if args.compare is not None and not args.score:
        raise UsageError("--compare with --schema: add --over VAR --score SCORE to evaluate the variants "
                         "(e.g. --score schema_valid), or drop --compare")
    if args.over and args.over not in ns:
        raise UsageError(f"--over {args.over}: no variable of that name; define a DataFrame or list first")


def run_magic(settings, args, cell: str, *, ns: dict, store: Callable[[Any], None]) -> None:
    """`settings`: the cell's merged options; `ns`: the notebook's variables; `store` keeps the result."""
    from IPython.core.error import UsageError
    from IPython.display import display

    from ..batch.magic import pack_option
    from ..display.datasets import extract_line, show_record

    _checked(args, ns)
    call = settings.call()
    template = cell.strip("\n")
    pack = pack_option(getattr(args, "pack", None))
    if pack is not None and not args.over:
        raise UsageError("--pack packs the rows of --over VAR into requests: add --over VAR or drop --pack")
    try:
        from .schema import parse_spec
        schema = parse_spec(args.schema, ns) if args.schema else None
        if args.score:
            from .evaluate import evaluate
            score = args.score
            if score.isidentifier() and callable(ns.get(score)) and score not in ("json_valid", "schema_valid",
                                                                                  "length"):
                score = ns[score]  # a scorer function of the notebook
            result = evaluate(args.compare, ns[args.over], score, template=template or None, schema=schema,
                              namespace=ns, max_workers=args.workers, pack=pack, **call)
            display(result)
        elif args.over:
            from .extract import extract
            result = extract(ns[args.over], schema, template=template, namespace=ns, max_workers=args.workers,
                             pack=pack, **call)
            display(result)
            print(extract_line(result.attrs["nb_model"]))
        else:
            from ..template import cell_prompt
            from .extract import extract_one
            prompt = cell_prompt(cell, None if args.no_interpolate else ns)
            result, record = extract_one(prompt, schema, **call)
            if result is None:
                raise ConfigError(f"no valid answer for the schema after a retry: {record['error']}")
            show_record(result, record)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except NbModelError:
        raise
    store(result)
