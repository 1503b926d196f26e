"""The parameter table: every generation parameter and every setting the magic, the panel and compare share.

One row per name says its type, the values it takes, its `%%generate` flags and help, its `%config NbModel`
trait, how `--compare` reads a list of its values and how the panel shows it. From the rows are built: the
magic's `@argument` options, the `NbModel` traits, `validate_params`, compare's settings, the panel's
sliders and its "To cell" source, and `%generate config`'s listing. `merge` is the one place where cell
options win over `%config` values, which win over a profile's defaults.

Foundations: this module imports nothing of nb_model's and nothing heavy (traitlets only when traits are made).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .errors import ConfigError

FORMATS = ("text", "markdown", "code", "json", "html")


class Knob(NamedTuple):
    """How the panel shows a numeric setting: a widget class of ipywidgets, its range, step and the value
    it starts at when neither the caller nor the profile gives one."""

    widget: str
    low: float
    high: float | None  # None: the profile's max_tokens cap
    step: float | None = None
    start: float = 0


class Param(NamedTuple):
    """One row of the table (a NamedTuple, not a dataclass: `%load_ext` pays for this module's import)."""

    name: str
    kind: type  # the Python type of a value (what --compare converts each value to)
    flags: tuple[str, ...] = ()  # %%generate options; () for settings the magic spells elsewhere
    help: str | None = None  # the option's help (as %%generate? shows it)
    generation: bool = False  # sent to the model (validated by validate_params, cached as part of a request)
    trait: str | None = None  # the help of the `%config NbModel.<name>` trait; None: no trait
    choices: tuple = ()
    check: Callable[[Any], bool] | None = None  # a valid value (max_tokens: see validate_params)
    error: str = ""  # the one-line error for an invalid value ({value!r} is filled in)
    compare: str | None = None  # how --compare separates values: "," (numbers, codes) or "|" (texts)
    knob: Knob | None = None  # the panel's slider or number box


def _number(v) -> bool:
    return isinstance(v, (int, float))


TABLE: tuple[Param, ...] = (
    Param("profile", str, ("-p", "--profile"), "profile name (see %%generate profiles)",
          trait="Default profile name.", compare=","),
    Param("model", str, ("-m", "--model"), "model name, overrides the profile's", trait="Default model.",
          compare=","),
    Param("max_tokens", int, ("--max-tokens",), "most tokens to generate (1..profile cap, 2048 for the seed API)",
          generation=True, trait="Default max_tokens.", compare=",", knob=Knob("IntSlider", 1, None, start=256)),
    Param("temperature", float, ("-t", "--temperature"), "sampling temperature, 0..2 (0 = greedy)",
          generation=True, trait="Default temperature.", compare=",",
          check=lambda v: _number(v) and 0 <= v <= 2, error="temperature must be between 0 and 2, got {value!r}",
          knob=Knob("FloatSlider", 0, 2, 0.05, start=0.7)),
    Param("top_p", float, ("--top-p",), "nucleus sampling mass, (0, 1]", generation=True, trait="Default top_p.",
          compare=",", check=lambda v: _number(v) and 0 < v <= 1, error="top_p must be in (0, 1], got {value!r}",
          knob=Knob("FloatSlider", 0.05, 1, 0.05, start=1.0)),
    Param("top_k", int, ("--top-k",), "sample among the k likeliest tokens", generation=True,
          trait="Default top_k.", compare=",", check=lambda v: isinstance(v, int) and v >= 1,
          error="top_k must be a positive integer, got {value!r}", knob=Knob("BoundedIntText", 0, 1000)),
    Param("language", str, ("--language",), "answer language code, e.g. en, zh, fr", generation=True,
          trait="Default language code.", compare=",", check=lambda v: isinstance(v, str) and bool(v.strip()),
          error="language must be a non-empty code such as 'en' or 'fr'"),
    Param("seed", int, ("--seed",), "sampling seed, where the server supports it", generation=True, compare=","),
    Param("system", str, ("-s", "--system"), "system text (instructions)", trait="Default system text.",
          compare="|"),
    Param("format", str, ("-f", "--format"), "how to show the answer", trait="Default output format.",
          choices=FORMATS),
    # not cell options of their own: the API's structured output (set by --schema), the prompt (the cell body)
    Param("response_format", dict, generation=True,
          check=lambda v: isinstance(v, dict) and isinstance(v.get("type"), str),
          error="response_format must be an object with a 'type', e.g. {{'type': 'json_object'}}"),
    Param("prompt", str, compare="|"),
)
BY_NAME = {p.name: p for p in TABLE}

PARAMS = tuple(p.name for p in TABLE if p.generation)  # what a request may carry
CELL_PARAMS = tuple(p for p in PARAMS if BY_NAME[p].flags)  # the generation parameters a cell can set
OPTIONS = tuple(p for p in TABLE if p.flags)  # the %%generate options from the table, in --help order
TRAITS = tuple(p.name for p in TABLE if p.trait) + ("stream",)

# --compare: the settings it varies, in the order its error message lists them; values of a "|" setting
# are texts (they may contain commas)
COMPARE = ("temperature", "top_p", "top_k", "max_tokens", "seed", "language", "model", "profile", "system",
           "prompt")
SETTINGS = {name: BY_NAME[name].kind for name in COMPARE}
TEXTS = tuple(name for name in COMPARE if BY_NAME[name].compare == "|")

# the panel: its knobs in the order of its "To cell" source; sliders always carry a value, the rest when set
PANEL = ("profile", "model", "temperature", "top_p", "top_k", "max_tokens", "language", "system")


def validate_params(params: dict[str, Any], profile) -> dict[str, Any]:
    """Check generation parameters (None: unset, dropped); raise one ConfigError line saying what is allowed.
    `profile` gives the max_tokens cap (its `max_tokens_cap` and `name`)."""
    out = {k: v for k, v in params.items() if v is not None}
    unknown = set(out) - set(PARAMS)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(sorted(unknown))}; allowed: {', '.join(PARAMS)}")
    mt = out.get("max_tokens")
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or not 1 <= mt <= profile.max_tokens_cap):
        raise ConfigError(f"max_tokens must be an integer from 1 to {profile.max_tokens_cap} "
                          f"(profile {profile.name!r}), got {mt!r}")
    for row in TABLE:  # in table order: the first bad one is reported
        if row.name in out and row.check is not None and not row.check(out[row.name]):
            raise ConfigError(row.error.format(value=out[row.name]))
    return out


def merge(*layers: Mapping[str, Any] | None, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The value of each name from the first layer that sets it (not None): cell options, then `%config`,
    then a profile's defaults. `names`: the names to give (default: every name of every layer)."""
    layers = [layer or {} for layer in layers]
    if names is None:
        names = dict.fromkeys(k for layer in layers for k in layer)
    return {n: next((layer[n] for layer in layers if layer.get(n) is not None), None) for n in names}


class Settings:
    """What a `%%generate` cell runs with: its options over the `%config NbModel` values (made by `merge`).

    The cell's modes (`--compare`, `--over`, `--schema`, `--context`, `--tools`) receive this, not the magic.
    A profile's own defaults apply later, in the client, for the profile each request uses. `params`: the
    generation parameters (None: unset)."""

    __slots__ = ("profile", "model", "system", "format", "stream", "cache", "params")

    def __init__(self, *, profile: str | None = None, model: str | None = None, system: str | None = None,
                 format: str = "text", stream: bool = True, cache: str = "use",
                 params: dict[str, Any] | None = None) -> None:
        self.profile, self.model, self.system, self.format = profile, model, system, format
        self.stream, self.cache, self.params = stream, cache, dict(params or {})

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def call(self) -> dict[str, Any]:
        """Keyword arguments of generate_many / extract / evaluate: the set parameters and the rest."""
        return dict(profile=self.profile, model=self.model, system=self.system, cache=self.cache,
                    **{k: v for k, v in self.params.items() if v is not None})


def cell_settings(args, configured) -> Settings:
    """Merge a cell's parsed options (`args`) over the `%config` values (`configured`: the NbModel magics)."""
    cell = {p.name: getattr(args, p.name, None) for p in OPTIONS}
    config = {name: getattr(configured, name, None) for name in TRAITS}
    merged = merge(cell, config)
    return Settings(profile=merged["profile"], model=merged["model"], system=merged["system"],
                    format=merged["format"] or "text",
                    stream=bool(config["stream"]) and not getattr(args, "no_stream", False),
                    cache=getattr(args, "cache", "use"), params={n: merged[n] for n in CELL_PARAMS})


# -- what the table builds -----------------------------------------------------------------------
def arguments() -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """(flags, keyword arguments) of argparse's add_argument for each option of the table, in order."""
    out = []
    for p in OPTIONS:
        kw: dict[str, Any] = {"help": p.help}
        if p.kind in (int, float):
            kw["type"] = p.kind
        if p.choices:
            kw["choices"] = list(p.choices)
        if p.name != p.flags[-1].lstrip("-"):
            kw["dest"] = p.name
        out.append((p.flags, kw))
    return out


def traits() -> dict[str, Any]:
    """The configurable traits of `NbModel`, one per row with a trait (unset: None), plus `stream`."""
    from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode

    kinds = {str: Unicode, int: Int, float: Float}
    out: dict[str, Any] = {}
    for p in TABLE:
        if not p.trait:
            continue
        if p.choices:
            out[p.name] = CaselessStrEnum(list(p.choices), default_value=p.choices[0], help=p.trait).tag(config=True)
        else:
            out[p.name] = kinds[p.kind](None, allow_none=True, help=p.trait).tag(config=True)
    out["stream"] = Bool(True, help="Stream text as it arrives.").tag(config=True)
    return out


def config_rows(configured) -> list[tuple[str, str]]:
    """`%generate config`'s lines for the `%config NbModel` values set (the format and stream always)."""
    rows = [(f"%config NbModel.{p.name}", repr(getattr(configured, p.name))) for p in TABLE
            if p.trait and not p.choices and p.name != "profile" and getattr(configured, p.name) is not None]
    return rows + [("format", configured.format), ("stream", str(configured.stream))]


def cell_options(settings: Mapping[str, Any]) -> list[str]:
    """The `%%generate` options that reproduce a panel's knob values (`PANEL` order; sliders always)."""
    opts: list[str] = []
    for name in PANEL:
        p, value = BY_NAME[name], settings.get(name)
        slider = p.knob is not None and p.knob.widget.endswith("Slider")
        if not (slider or value):
            continue
        opts += [p.flags[0], f"{value:g}" if isinstance(value, float) else str(value)]
    return opts


def table_arguments(func):
    """Decorator: the table's options as `IPython.core.magic_arguments.argument`s, in table order (put it
    where those options go in the stack under `@magic_arguments()`)."""
    from IPython.core.magic_arguments import argument

    for flags, kw in reversed(arguments()):  # decorators apply bottom-up; the parser reads them top-down
        func = argument(*flags, **kw)(func)
    return func
