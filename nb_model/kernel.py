"""nb_model inside IPython: notices as muted lines in the notebook, progress lines as displays updated in
place, and the notebook session read from the shell. Installed into `nb_model.notices` when the package is
imported (and again by `%load_ext nb_model`); each handler looks for a shell when it is called, so code
run outside IPython keeps the plain stderr lines. Nothing here imports IPython unless it is loaded already.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from . import notices


def _shell():
    """The running IPython shell, or None (IPython is never imported here just to ask)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def notice(msg: str) -> None:
    """A muted display line inside IPython/Jupyter, else a line on stderr."""
    if _shell() is not None:
        from .display import show_notice
        show_notice(msg)
    else:
        print(msg, file=sys.stderr)


def progress_line() -> Callable[[str, bool], None]:
    """A line updated in place: a display in a Jupyter kernel, else stderr."""
    shell = _shell()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return notices._stderr_line()
    state: dict[str, Any] = {}

    def show(text: str, done: bool = False) -> None:
        from IPython.display import display
        bundle = {"text/plain": text}
        if "handle" not in state:
            state["handle"] = display(bundle, raw=True, display_id=True)
        else:
            state["handle"].update(bundle, raw=True)
    return show


def session_name() -> str | None:
    """`__session__` in the shell's user namespace (the notebook's path, set by Jupyter), if any."""
    shell = _shell()
    value = shell.user_ns.get("__session__") if shell is not None else None
    return value if isinstance(value, str) and value else None


def install() -> None:
    notices.set_notice_handler(notice)
    notices.set_progress_handler(progress_line)
    notices.set_session_finder(session_name)
