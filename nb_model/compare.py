"""Run variants of one prompt side by side: `%%generate --compare SPEC` and the panel's compare mode.

A spec names settings and their values; several settings separated by `;` make a grid::

    temperature=0.2,0.8                 -> 2 variants
    temperature=0.2,0.8; top_p=0.5,1    -> 4 variants (every combination)
    system=Answer in one word|Answer as a poem   -> text values are separated by |
    topic=rain|snow                     -> fills {topic} of the prompt (prompt variants)
    prompt=Describe a cat|Describe a dog -> whole prompts (the cell says {prompt})

Each variant is a `Job`: one `Stream` from the client core, read in its own thread,
so variants run concurrently and can be stopped from another thread.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from .errors import ConfigError, Interrupted, NbModelError
from .params import SETTINGS, TEXTS  # noqa: F401 - what a spec may vary; TEXTS: values separated by |
MIN_VARIANTS, MAX_VARIANTS = 2, 4
STOP_GRACE_S = 0.4  # a stopped job still running after this is left behind with its partial text
EXAMPLE = '"temperature=0.2,0.8; top_p=0.5,1"'


def _values(name: str, text: str, kind: type) -> list[Any]:
    bar = name in TEXTS or kind is None or "|" in text
    items = [v.strip() for v in text.split("|" if bar else ",")]
    if not all(items):
        raise ConfigError(f"compare: empty value in {name}={text.strip()}; separate values with "
                          f"{'|' if bar else 'commas'}")
    try:
        values = [kind(v) for v in items] if kind else items
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise ConfigError(f"compare: {name} needs {what}, got {text.strip()!r}") from None
    if len(set(values)) < len(values):
        raise ConfigError(f"compare: {name} lists a value twice ({text.strip()}); each variant must differ")
    return values


def parse_compare(spec: str, variables: Iterable[str] = (), *, min_variants: int = MIN_VARIANTS,
                  max_variants: int = MAX_VARIANTS) -> list[dict[str, Any]]:
    """`"temperature=0.2,0.8; top_p=0.5,1"` -> one settings dict per variant (the grid's rows).

    Besides SETTINGS, a name in `variables` (a `{name}` of the prompt) takes text values: `topic=rain|snow`.
    """
    variables = set(variables) - set(SETTINGS)
    axes: dict[str, list[Any]] = {}
    for part in (p.strip() for p in (spec or "").split(";")):
        if not part:
            continue
        name, eq, values = part.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in SETTINGS and name not in variables:
            extra = f", or a {{name}} of the prompt ({', '.join(sorted(variables))})" if variables else ""
            raise ConfigError(f"compare: cannot read {part!r}; write name=value,value with name one of "
                              f"{', '.join(SETTINGS)}{extra}, e.g. {EXAMPLE}")
        if name in axes:
            raise ConfigError(f"compare: {name} is given twice; list all its values once: {name}=a,b")
        axes[name] = _values(name, values, SETTINGS.get(name))
    variants = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if not min_variants <= len(variants) <= max_variants:
        raise ConfigError(f"compare: {(spec or '').strip()!r} makes {len(variants)} variant(s); side by side "
                          f"needs {min_variants} to {max_variants}, e.g. {EXAMPLE}")
    return variants


def label(variant: dict[str, Any]) -> str:
    return " · ".join(f"{k}={_short(v)}" for k, v in variant.items())


def _short(value: Any, width: int = 32) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def one_line(exc: BaseException) -> str:
    """An error as one line: our messages as they are, anything else prefixed with its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, NbModelError) else f"{type(exc).__name__}: {text}".rstrip(": ")


class Job:
    """One variant: a `Stream` read in a worker thread; `text` (the Generation's) grows as deltas arrive."""

    def __init__(self, label: str, stream, cap: int) -> None:
        self.label = label
        self.stream = stream
        self.cap = cap
        self.error: str | None = None
        self.exc: BaseException | None = None
        self.done = threading.Event()
        self.stop_requested: float | None = None

    @property
    def generation(self):
        return self.stream.generation

    @property
    def text(self) -> str:
        return self.generation.text

    def run(self) -> None:
        try:
            for _ in self.stream:  # the stream appends each delta to its Generation
                pass
        except BaseException as exc:  # noqa: BLE001 - reported as one line, never a traceback
            if self.stop_requested is not None:
                self.generation.finish_reason = "stopped"
            else:
                self.error, self.exc = one_line(exc), exc
        finally:
            self.done.set()

    def stop(self) -> None:
        """Close the stream (safe from any thread); the text so far is kept."""
        if not self.done.is_set() and self.stop_requested is None:
            self.stop_requested = time.monotonic()
            self.stream.close()

    def abandon(self) -> None:
        """Give up waiting for a stopped job whose connection has not answered yet."""
        self.generation.finish_reason = "stopped"
        self.done.set()


def start_jobs(variants: list[dict[str, Any]], *, template: str, namespace: Mapping[str, Any] | None = None,
               system: str | None = None, profile: str | None = None, model: str | None = None,
               params: dict[str, Any] | None = None, stream: bool = True, cache: str = "use",
               on_retry: Callable[[str], None] | None = None) -> list[Job]:
    """One Job per variant; `template` is filled from `namespace` (None: sent as written) plus the
    variant's `{name}` values. Bad settings raise ConfigError here, before anything is sent."""
    from .client import client_for
    from .template import fill, references

    if any("prompt" in v for v in variants):
        if template.strip() and "prompt" not in references(template):
            raise ConfigError("compare: prompt=… gives the whole prompt; leave the prompt empty, "
                              "or write {prompt} where each value goes")
        template = template if template.strip() else "{prompt}"
    jobs = []
    for variant in variants:
        extra = {k: v for k, v in variant.items() if k in SETTINGS and k not in TEXTS}
        words = {k: v for k, v in variant.items() if k not in extra and k != "system"}
        if namespace is None:
            prompt = words.get("prompt", template)
        else:
            prompt = fill(template, {**namespace, **words})
        client = client_for(extra.pop("profile", None) or profile, model=extra.pop("model", None) or model)
        s = client.stream(prompt, system=variant.get("system", system), stream=stream, cache=cache,
                          on_retry=on_retry, **{**(params or {}), **extra})
        jobs.append(Job(label(variant), s, client.profile.max_tokens_cap))
    return jobs


def run_jobs(jobs: list[Job], on_tick: Callable[[], None] | None = None, interval: float = 0.05) -> None:
    """Run every job in its own thread; call `on_tick` every `interval` s until all are done.

    Ctrl-C (or `Job.stop` from another thread) closes the streams; stopped jobs
    that do not end within STOP_GRACE_S are abandoned with their partial text.
    """
    for job in jobs:
        threading.Thread(target=job.run, name=f"nb_model job {job.label}", daemon=True).start()
    try:
        while pending := [j for j in jobs if not j.done.is_set()]:
            pending[0].done.wait(interval)
            if all(j.stop_requested and time.monotonic() - j.stop_requested > STOP_GRACE_S for j in pending):
                for job in pending:
                    job.abandon()
            if on_tick:
                on_tick()
    except KeyboardInterrupt:
        for job in jobs:
            job.stop()
        _wait_stopped(jobs)
        raise


def _wait_stopped(jobs: list[Job]) -> None:
    deadline = time.monotonic() + STOP_GRACE_S
    for job in jobs:
        if not job.done.wait(max(0.0, deadline - time.monotonic())):
            job.abandon()


# -- the magic -------------------------------------------------------------
def run_magic(settings, args, cell: str, *, ns: dict, store: Callable[[Any], None]) -> None:
    """`%%generate --compare SPEC`: run the variants concurrently, then show one table."""
    from IPython.core.error import UsageError
    from IPython.display import display

    from .display import in_kernel, show_notice
    from .display.compare import table_bundle
    from .display.frontend import LiveColumns
    from .template import references

    for other in ("chat", "over"):
        if getattr(args, other, None):
            raise UsageError(f"--compare cannot be combined with --{other}")
    if args.format not in (None, "text"):
        raise UsageError(f"--compare shows the variants as text side by side; drop -f {args.format}")
    template = cell.strip("\n")
    namespace = None if args.no_interpolate else ns
    try:
        variants = parse_compare(args.compare, () if namespace is None else references(template))
        jobs = start_jobs(variants, template=template, namespace=namespace, system=settings.system,
                          profile=settings.profile, model=settings.model, params=settings.params,
                          stream=settings.stream, on_retry=show_notice, cache=settings.cache)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    live = LiveColumns(jobs) if in_kernel() else None
    interrupted = False
    try:
        run_jobs(jobs, on_tick=live.tick if live else None)
    except KeyboardInterrupt:
        interrupted = True
    if live:
        live.finish()
    bundle, meta = table_bundle(jobs)
    display(bundle, raw=True, metadata=meta)
    store([j.generation for j in jobs])
    if interrupted:
        raise Interrupted("stopped by user; partial texts kept")
    failed = [j for j in jobs if j.exc is not None]
    if failed:
        raise failed[0].exc
