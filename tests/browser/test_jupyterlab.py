"""End to end in a real browser: JupyterLab (subprocess, loopback port, temporary root dir) with a
kernel on this Python, driven by Playwright in Debian's headless Chromium. The kernel calls the
embedded sandbox over real HTTP. Screenshots go to test-output/."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from conftest import _free_port, missing_part, server_process

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output"
CHROMIUM = os.environ.get("NB_MODEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CELLS = [
    "%load_ext nb_model\nimport nb_model\nnb_model.sandbox_server().token_rate = 60  # slow enough to watch text grow",
    "%%generate --max-tokens 40\nDescribe a lighthouse keeper's evening",
    "%generate panel",
]


def _need_browser():
    """Skip when Chromium or Playwright is missing on a developer machine; in CI that is a failure."""
    missing = []
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        missing.append(f"chromium ({CHROMIUM}; apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[browser]')")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        missing_part(reason)


def _write_notebook(path: Path) -> None:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a loopback port; its kernelspec `python3` runs this interpreter."""
    _need_browser()
    root = tmp_path / "root"
    root.mkdir()
    _write_notebook(root / "panel.ipynb")
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast over the page
    kernel_dir = tmp_path / "data" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (nb_model test)", "language": "python"}))
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    token, port = secrets.token_hex(16), _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--IdentityProvider.token={token}",
            "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
            f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with server_process(argv, f"{url}/api/status?token={token}", tmp_path / "jupyterlab.log", timeout=60,
                        cwd=root, env=env):
        yield url, token, root


def test_generate_cell_and_panel_in_jupyterlab(jupyterlab):
    from playwright.sync_api import expect, sync_playwright

    url, token, root = jupyterlab
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{url}/lab/tree/panel.ipynb?token={token}")
            page.wait_for_function(
                "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
                timeout=60_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            streamed = page.locator(".jp-OutputArea-output").filter(has_text="[sandbox]").first
            expect(streamed).to_be_visible()
            expect(page.locator(".jp-OutputArea-output").filter(has_text="tokens").first).to_be_visible()
            panel = page.locator(".nb-model-panel")
            expect(panel).to_be_visible()
            page.screenshot(path=str(OUT / "jupyterlab-notebook.png"), full_page=True)

            panel.locator(".nb-model-prompt textarea").fill("Describe the harbour at night")
            panel.locator("button", has_text="Generate").click()
            status, growing = panel.locator(".nb-model-status"), panel.locator(".nb-model-output").first
            lengths = []  # the text as the page shows it, sampled while the answer streams in
            while "finish:" not in status.inner_text():
                lengths.append(len(growing.inner_text()))
                page.wait_for_timeout(50)
            assert len({n for n in lengths if n}) >= 3, lengths  # it grew step by step, not all at once
            output = panel.locator(".nb-model-output").filter(has_text="[sandbox]")
            expect(output).to_be_visible()
            expect(panel.locator(".nb-model-status")).to_contain_text("finish:")
            expect(panel.locator("button", has_text="Generate")).to_be_enabled()
            assert "harbour" in output.inner_text().lower()

            panel.locator("button", has_text="To cell").click()
            expect(panel.locator("textarea").last).to_have_value(
                "%%generate -p sandbox -t 0.7 --top-p 1 --max-tokens 256\nDescribe the harbour at night")
            panel.screenshot(path=str(OUT / "panel.png"))
            page.screenshot(path=str(OUT / "jupyterlab-panel.png"), full_page=True)

            panel.locator("input[placeholder^='2-4 variants']").fill("temperature=0.2,1.5")
            panel.locator("button", has_text="Generate").click()
            columns = panel.locator(".nb-model-output").filter(has_text="[sandbox]")
            expect(columns).to_have_count(2)
            expect(panel.locator(".nb-model-status")).to_contain_text("2 variants")
            panel.screenshot(path=str(OUT / "panel-compare.png"))
        finally:
            browser.close()
    assert (OUT / "panel.png").stat().st_size > 10_000
