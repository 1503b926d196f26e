"""Execute tutorial notebooks in place and save them with their outputs (what nbval compares).

Usage: python scripts/refresh_notebooks.py [notebooks/NN-name.ipynb ...]   (default: all)
Runs each in a fresh kernel with the notebook's folder as working directory and a fresh cache.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

import nbformat
from nbclient import NotebookClient


def refresh(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    shutil.rmtree(os.path.join(folder, ".nb_model"), ignore_errors=True)  # outputs as on a first run
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # widget state holds timings: keep it out of the saved file
    NotebookClient(nb, timeout=600, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": folder}}).execute()
    nbformat.write(nb, path)
    print(f"refreshed {path}")


if __name__ == "__main__":
    for nb_path in sys.argv[1:] or sorted(glob.glob("notebooks/*.ipynb") + glob.glob("notebooks/*/*.ipynb")):
        refresh(nb_path)
