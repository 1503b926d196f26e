"""`pip install .` into a fresh venv enables the server extension (scripts/check_server_extension.sh)."""
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
def test_pip_install_enables_the_server_extension():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "check_server_extension.sh"), str(ROOT)],
                          env={**os.environ, "PYTHON": sys.executable,  # pip's cache and config live in
                               "HOME": pwd.getpwuid(os.getuid()).pw_dir},  # the real home, not the test's
                          capture_output=True, text=True, timeout=1100)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "PASS: nb_model server extension enabled after pip install" in done.stdout
