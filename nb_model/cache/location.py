"""Where the per-notebook SQLite file lives (see the package docstring for the order)."""
from __future__ import annotations

import os
from pathlib import Path

from ..notices import session_name

FOLDER = ".nb_model"
FALLBACK_NAME = "cache.sqlite"
OFF = ("off", "none", "0", "false")
AUTO = "auto"

_override: Path | str | None = None  # a file, "off", or None (automatic)


def file_for(value: str | os.PathLike) -> Path | str:
    """A file, or "off", for a value of NB_MODEL_CACHE / `--file`: a folder means `<folder>/cache.sqlite`."""
    text = os.fspath(value)
    if text.strip().lower() in OFF:
        return "off"
    path = Path(text).expanduser().absolute()
    return path / FALLBACK_NAME if path.is_dir() or text.endswith(("/", os.sep)) else path


def set_override(path: str | os.PathLike | None) -> None:
    """`%generate cache --file PATH|DIR|off|auto`: use this for the rest of the session (None or auto: back to
    automatic placement)."""
    global _override
    _override = None if path is None or os.fspath(path).strip().lower() in ("", AUTO) else file_for(path)


def _session_name() -> str | None:
    """The kernel's notebook path: $JPY_SESSION_NAME, else what the front end knows (IPython's `__session__`
    in the user namespace: see nb_model.kernel)."""
    name = os.environ.get("JPY_SESSION_NAME")
    if name:
        return name
    value = session_name()
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
        return (None, "%generate cache --file off") if _override == "off" else (_override, "%generate cache --file")
    env = os.environ.get("NB_MODEL_CACHE")
    if env:
        path = file_for(env)
        return (None, "NB_MODEL_CACHE=off") if path == "off" else (path, "NB_MODEL_CACHE")
    nb = notebook_path()
    if nb is not None:
        return nb.parent / FOLDER / f"{nb.stem}.sqlite", f"beside notebook {nb.name}"
    return Path.cwd() / FOLDER / FALLBACK_NAME, "fallback: current folder (no notebook path known)"
