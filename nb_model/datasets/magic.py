"""`%%generate --schema SPEC` (one cell, or `--over VAR` into a DataFrame) and
`%%generate --over VAR --compare SPEC --score SCORE` (an evaluation)."""
from __future__ import annotations

import json

from ..errors import ConfigError, NbModelError


def run_magic(magics, args, cell: str) -> None:
    from IPython.core.error import UsageError
    from IPython.display import display

    ns = magics.shell.user_ns
    if getattr(args, "chat", None):
        raise UsageError("--schema / --score cannot be combined with --chat")
    if args.score and not (args.over and args.compare):
        raise UsageError("--score evaluates variants over rows: use it with --over VAR --compare SPEC")
    if args.compare is not None and not args.score:
        raise UsageError("--compare with --schema: add --over VAR --score SCORE to evaluate the variants "
                         "(e.g. --score schema_valid), or drop --compare")
    if args.over and args.over not in ns:
        raise UsageError(f"--over {args.over}: no variable of that name; define a DataFrame or list first")
    call = dict(profile=args.profile or magics.profile, model=args.model or magics.model,
                system=args.system or magics.system, cache=args.cache,
                **{k: v for k, v in magics.params(args).items() if v is not None})
    template = cell.strip("\n")
    pack = getattr(args, "pack", None)
    if pack is not None and pack != "auto":
        try:
            pack = int(pack)
        except ValueError:
            raise UsageError(f"--pack takes a number of prompts per request or auto, got {pack!r}") from None
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
            info = result.attrs["nb_model"]
            replay = f" · {info['cached']} of {info['calls']} calls from the cache (free)" if info["cached"] else ""
            print(f"— {info['rows']} rows · {info['ok']} ok · {info['repaired']} repaired · {info['retried']} "
                  f"retried · {info['failed']} failed · {info['calls']} calls · ${info['cost_usd']:.4f}{replay}")
        else:
            from .extract import extract_one
            prompt = template if args.no_interpolate else magics.prompt(args, cell)
            result, record = extract_one(prompt, schema, **call)
            if result is None:
                raise ConfigError(f"no valid answer for the schema after a retry: {record['error']}")
            shown = json.dumps(result, ensure_ascii=False, indent=1)
            display({"application/json": result, "text/plain": shown}, raw=True)
            gens = record["generations"]
            note = "repaired" if record["status"] == "repaired" else "retried once" if len(gens) > 1 else "valid"
            cached = sum(g.cached for g in gens)
            replay = f" · {cached} of {len(gens)} call{'s' * (len(gens) > 1)} from the cache (free)" if cached else ""
            print(f"— {note} · {sum(g.usage.total_tokens for g in gens)} tokens · "
                  f"${sum(g.cost_usd for g in gens):.4f}{replay}")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except NbModelError:
        raise
    magics._store(args, result)
