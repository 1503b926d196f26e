"""Names `--out VAR` refuses: IPython's own variables and the builtins a value would shadow.

Storing a Generation in `_oh` breaks every later displayed value (and the shell's exit),
in `get_ipython` breaks `get_ipython()`, in `print` or `list` the user's own code.
"""
from __future__ import annotations

import builtins
import keyword
import re

IPYTHON_NAMES = frozenset({"_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh", "In", "Out",
                           "get_ipython", "exit", "quit", "_exit_code"})
_NUMBERED = re.compile(r"^_i{0,3}\d+$")  # _12, _i12: the output and input history
_BUILTINS = frozenset(name for name in dir(builtins) if not name.startswith("_"))


def out_name_problem(name: str) -> str | None:
    """One line saying why `name` cannot hold the result, or None when it can."""
    if not name.isidentifier() or keyword.iskeyword(name):
        return f"--out needs a variable name, got {name!r}"
    if name in IPYTHON_NAMES or _NUMBERED.match(name):
        return f"--out {name}: {name!r} is one of IPython's own names; pick another name, e.g. --out result"
    if name.startswith("__") and name.endswith("__"):
        return f"--out {name}: names like {name!r} are Python's own; pick another name, e.g. --out result"
    if name in _BUILTINS:
        return f"--out {name}: {name!r} would hide Python's builtin {name}(); pick another name, e.g. --out result"
    return None
