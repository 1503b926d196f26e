"""Project-wide pytest setup: the tutorial notebooks are checked by nbval with our sanitize file, each in a
kernel with a fresh cache of its own (as `scripts/refresh_notebooks.py` saved them), so what a cell shows
(a paid call, or a hit marked `· cached`) is the same on every run and needs no sanitizing."""
import os
import tempfile
from pathlib import Path

import pytest

SANITIZE = Path(__file__).parent / "notebooks" / "nbval-sanitize.cfg"
_fresh: dict[str, str] = {}


def pytest_configure(config):
    if getattr(config.option, "nbval_sanitize_with", "unset") is None:
        config.option.nbval_sanitize_with = str(SANITIZE)  # absolute: works from any folder


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before a notebook's kernel starts (with its first cell): a new, empty cache folder for it."""
    notebook = item.parent
    if type(notebook).__name__ != "IPyNbFile" or notebook.nodeid in _fresh:
        return
    _fresh[notebook.nodeid] = tempfile.mkdtemp(prefix="nb_model-nbval-cache-")
    os.environ["NB_MODEL_CACHE"] = _fresh[notebook.nodeid] + os.sep


def pytest_collectstart(collector):
    """nbval leaves nb_model's renderer payload alone: a footer's holds timings, and all of it is
    also in the output's text/plain, which nbval does compare."""
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = (*collector.skip_compare, "application/vnd.nb-model.generation+json")
