"""Where the per-notebook SQLite file lives (see the package docstring for the order)."""
from __future__ import annotations

import os
from pathlib import Path

FOLDER = ".nb_model"
FALLBACK_NAME = "cache.sqlite"
OFF = ("off", "none", "0", "false")

_override: Path | None = None


def set_override(path: str | os.PathLike | None) -> None:
    """`%generate cache --file PATH`: use this file for the rest of the session (None: back to automatic)."""
    global _override
    _override = Path(path).expanduser().absolute() if path else None


def _session_name() -> str | None:
    """The kernel's notebook path: $JPY_SESSION_NAME, else `__session__` in the user namespace."""
    name = os.environ.get("JPY_SESSION_NAME")
    if name:
        return name
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    value = shell.user_ns.get("__session__") if shell is not None else None
    return value if isinstance(value, str) and value else None


def notebook_path() -> Path | None:
    """The notebook this kernel runs, if Jupyter told us (relative names are beside the kernel's cwd)."""
    name = _session_name()
    if not name:
        return None
    path = Path(name).expanduser()
    if path.suffix != ".ipynb":
        return None  # a console or an opaque session id: no notebook to sit beside
    return path if path.is_absolute() else Path.cwd() / path.name


def sqlite_path() -> tuple[Path | None, str]:
    """(file, why): the SQLite file to use now and where that choice came from; file None = disabled."""
    if _override is not None:
        return _override, "%generate cache --file"
    env = os.environ.get("NB_MODEL_CACHE")
    if env:
        if env.strip().lower() in OFF:
            return None, "NB_MODEL_CACHE=off"
        path = Path(env).expanduser().absolute()
        return (path / FALLBACK_NAME if path.is_dir() else path), "NB_MODEL_CACHE"
    nb = notebook_path()
    if nb is not None:
        return nb.parent / FOLDER / f"{nb.stem}.sqlite", f"beside notebook {nb.name}"
    return Path.cwd() / FOLDER / FALLBACK_NAME, "fallback: current folder (no notebook path known)"
