"""Project-wide pytest setup: the tutorial notebooks are checked by nbval with our sanitize file."""
from pathlib import Path

SANITIZE = Path(__file__).parent / "notebooks" / "nbval-sanitize.cfg"


def pytest_configure(config):
    if getattr(config.option, "nbval_sanitize_with", "unset") is None:
        config.option.nbval_sanitize_with = str(SANITIZE)  # absolute: works from any folder


def pytest_collectstart(collector):
    """nbval leaves nb_model's renderer payload alone: a footer's holds timings, and all of it is
    also in the output's text/plain, which nbval does compare."""
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = (*collector.skip_compare, "application/vnd.nb-model.generation+json")
