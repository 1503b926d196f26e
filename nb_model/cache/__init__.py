"""The cache of generations, their history, usage and cost.

Each generation is cached under a key over everything that changes its answer
(see `keys`): a re-run notebook replays its answers without sending requests.

Where entries live, strongest first:
  * a Redis URL (NB_MODEL_CACHE_URL=redis://… or a profile's `cache_url`): a shared
    cache for several machines, see `redis_store`; history stays in the SQLite file below;
  * `%generate cache --file PATH|DIR|off|auto` for this session: a file, a folder (its cache.sqlite),
    off (no cache file: no caching, no history on disk) or auto (back to the automatic choice below);
    else NB_MODEL_CACHE=PATH|DIR|off in the environment;
  * in Jupyter, beside the notebook: `<notebook folder>/.nb_model/<notebook-stem>.sqlite`
    (the kernel learns its notebook from $JPY_SESSION_NAME or `__session__`);
  * fallback, when no notebook path is known (plain IPython, nbclient/nbval without a
    session name): `./.nb_model/cache.sqlite` in the current folder.

`history()` returns the generations of the current notebook (a pandas DataFrame
when pandas is installed, else a list of dicts). Nothing heavy is imported here.
"""
from __future__ import annotations

from .keys import cache_key
from .sqlite_store import HISTORY_COLUMNS

__all__ = ["cache_key", "default_store", "history", "reset"]


def default_store(profile=None):
    """The store `client_for()` gives each Client: the router over SQLite/Redis for this notebook."""
    from .router import CacheRouter
    return CacheRouter(getattr(profile, "cache_url", None))


def history(n: int | None = None):
    """The last `n` generations of this notebook (all when None), oldest first."""
    from .router import recent_history
    rows = recent_history(n)
    try:
        import pandas as pd
    except ImportError:
        return rows
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    frame["cached"] = frame["cached"].astype(bool)
    return frame


def reset() -> None:
    """Close stores and forget overrides and session counters (used by tests)."""
    from .router import reset as _reset
    _reset()
