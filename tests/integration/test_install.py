"""Installing the package enables the Jupyter server extension."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode, what", [("", "pip install"), ("--editable", "pip install -e (scripts/setup.sh)")])
def test_pip_install_enables_the_server_extension(mode, what):
    done = subprocess.run(["bash", str(ROOT / "scripts" / "check_server_extension.sh"), str(ROOT), mode],
                          env={**os.environ, "PYTHON": sys.executable,  # pip's cache and config live in
                               "HOME": pwd.getpwuid(os.getuid()).pw_dir},  # the real home, not the test's
                          capture_output=True, text=True, timeout=1100)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert f"PASS: nb_model server extension enabled after {what}\n" in done.stdout
    assert f"PASS: nb_model JupyterLab extension enabled after {what}\n" in done.stdout
