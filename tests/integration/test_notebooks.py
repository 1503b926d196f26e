"""Tutorial notebooks executed end to end with nbclient in a real kernel (nbval checks their outputs too)."""
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
QUICKSTART = NOTEBOOKS / "01-quickstart.ipynb"
QUICKSTARTS = [QUICKSTART, NOTEBOOKS / "zh" / "01-quickstart.ipynb"]  # every language's quickstart
COUNT = 'import nb_model\nprint("requests sent:", nb_model.sandbox_server().stats()["requests"])'


def run_copy(folder: Path, notebook: Path = QUICKSTART) -> str:
    """Execute a copy of a quickstart in `folder` plus a cell counting the sandbox's requests."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(COUNT))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return "".join(o.get("text", "") for o in nb.cells[-1].outputs)


@pytest.mark.parametrize("notebook", QUICKSTARTS, ids=lambda p: p.parent.name)
def test_warm_rerun_of_quickstart_sends_no_request(tmp_path, monkeypatch, notebook):
    monkeypatch.delenv("NB_MODEL_CACHE", raising=False)  # the default per-folder cache, as a user gets it
    cold = run_copy(tmp_path, notebook)
    warm = run_copy(tmp_path, notebook)
    assert int(cold.split(":")[1]) >= 3  # the cold run really called the sandbox
    assert warm.strip() == "requests sent: 0"
    assert (tmp_path / ".nb_model" / "cache.sqlite").exists()


def test_demo_command_runs_the_quickstart(tmp_path):
    nb = tmp_path / "quickstart.ipynb"
    shutil.copy(QUICKSTART, nb)
    out = subprocess.run([sys.executable, "-m", "nb_model.cli", "demo", str(nb)], capture_output=True,
                         text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[sandbox]" in out.stdout and "finish: length" in out.stdout
    assert out.stdout.rstrip().endswith("all cells ran")
