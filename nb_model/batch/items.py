"""The items of a batch: a list or pandas Series/DataFrame as a list, each item's prompt (a template filled
from it), a failed item's Generation, the `pack=` option checked."""
from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from .. import packing
from ..errors import ConfigError, NbModelError
from ..results import Generation


def is_pandas(obj: Any, kind: str) -> bool:
    """`obj` is a pandas `kind` (DataFrame, Series), without importing pandas."""
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == kind


def items_of(data: Any, what: str = "generate_many") -> tuple[list, Any]:
    """The items as a list (a DataFrame's rows as dicts), and the pandas index to give back (None for plain
    sequences); `what` names the caller in the one-line error."""
    if isinstance(data, (str, bytes, Mapping)):
        raise ConfigError(f"{what} needs a list, a pandas Series or a DataFrame, got {type(data).__name__}")
    if is_pandas(data, "DataFrame"):
        return data.to_dict("records"), data.index
    if is_pandas(data, "Series"):
        return data.tolist(), data.index
    try:
        return list(data), None
    except TypeError:
        raise ConfigError(f"{what} needs a list, a pandas Series or a DataFrame, got {type(data).__name__}") \
            from None


def fill_item(template: str | None, item: Any, namespace: Mapping | None = None) -> str:
    """The prompt of one item: the item itself, or `template` filled from it.

    A dict item (or DataFrame row) fills `{key}` references; any item is also
    `{item}`; other names come from `namespace` (e.g. the notebook's variables).
    """
    if template is None:
        if not isinstance(item, str):
            raise ConfigError(f"item is a {type(item).__name__}, not a prompt: pass template='...{{name}}...' "
                              "to fill a template from each item")
        return item
    from ..template import fill
    own = item if isinstance(item, Mapping) else {}
    return fill(template, ChainMap(own, {"item": item}, namespace or {}))


def _failed(exc: BaseException, profile: str, text: str = "") -> Generation:
    message = str(exc) if isinstance(exc, NbModelError) else f"{type(exc).__name__}: {exc}"
    return Generation(text=text, finish_reason="error", error=message, profile=profile)


def _check_pack(pack) -> None:
    if pack is None or pack == "auto":
        return
    if isinstance(pack, bool) or not isinstance(pack, int) or not 1 <= pack <= packing.MAX_PACK:
        raise ConfigError(f"pack must be an integer from 1 to {packing.MAX_PACK} or 'auto', got {pack!r}")
