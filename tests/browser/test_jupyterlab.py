"""End to end in a real browser: JupyterLab (subprocess, loopback port, temporary root dir) with a
kernel on this Python, driven by Playwright in Debian's headless Chromium. The kernel calls the
embedded sandbox over real HTTP. Screenshots go to test-output/."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import re

import pytest

from conftest import _free_port, missing_part, server_process
from nb_model.display.frontend import MIME

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
PROMPT = ("%%generate --max-tokens 70 -t 0.2\n"
          "Describe the keeper's {place} and the lamp's light for a visitor's guide; don't rush, and keep it calm")
PROSE_CELLS = [
    "%load_ext nb_model\nimport nb_model\nnb_model.sandbox_server().token_rate = 60\nplace = 'island'\n"
    "%generate cache --file cache.sqlite",
    PROMPT,
    PROMPT,  # the same again: a cache hit
    "%%generate --max-tokens 50 -f markdown\nA short list of harbour sounds",
    "%%generate --compare max_tokens=8,150\nwrite a long essay about tides",
    "from IPython.display import HTML\nfrom nb_model.display.compare import error_html\n"
    "HTML(error_html('the server refused the key: check MODEL_API_KEY'))",
]
NOTEBOOK = "() => window.jupyterapp.shell.currentWidget.content"
# contrast of an element's text with the background it is drawn on (WCAG relative luminance)
CONTRAST_JS = """(el) => {
  const rgba = s => { const m = s.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (top, base) => top.slice(0, 3).map((c, i) => c * top[3] + base[i] * (1 - top[3]));
  const layers = [];
  for (let n = el; n; n = n.parentElement) {
    const bg = rgba(getComputedStyle(n).backgroundColor);
    if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
  }
  let bg = [255, 255, 255];
  for (const layer of layers.reverse()) bg = over(layer, bg);
  const fg = over(rgba(getComputedStyle(el).color), bg);
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""
# how many words of an element's text are split over two line boxes
SPLIT_WORDS_JS = """(el) => {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let split = [], words = 0;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.data.matchAll(/\\S+/g)) {
      const r = document.createRange();
      r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
      const tops = new Set([...r.getClientRects()].map(q => Math.round(q.top)));
      words += 1;
      if (tops.size > 1) split.push(m[0]);
    }
  }
  return {split, words, lines: Math.round(el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight))};
}"""


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


def _write_notebook(path: Path, cells=CELLS) -> None:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a loopback port; its kernelspec `python3` runs this interpreter."""
    with _jupyter(tmp_path, "lab") as server:
        yield server


@contextlib.contextmanager
def _jupyter(tmp_path, app: str):
    """JupyterLab (`lab`) or Notebook 7 (`notebook`) serving panel.ipynb and prose.ipynb."""
    _need_browser()
    root = tmp_path / "root"
    root.mkdir()
    _write_notebook(root / "panel.ipynb")
    _write_notebook(root / "prose.ipynb", PROSE_CELLS)
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
    cls = "LabApp" if app == "lab" else "JupyterNotebookApp"
    argv = [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root", f"--IdentityProvider.token={token}",
            "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", f"--{cls}.expose_app_in_browser=True",
            f"--{cls}.user_settings_dir={tmp_path / 'settings'}", f"--{cls}.workspaces_dir={tmp_path / 'workspaces'}"]
    if app == "lab":
        argv += ["--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with server_process(argv, f"{url}/api/status?token={token}", tmp_path / f"jupyter-{app}.log", timeout=60,
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
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

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

            panel.locator("button", has_text="To cell").click()  # the extension inserts a cell below the panel's
            expect(panel.locator(".nb-model-status")).to_contain_text("added a %%generate cell below")
            source = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.model.cells.get(3)"
                                   ".sharedModel.getSource()")
            assert source == "%%generate -p sandbox -t 0.7 --top-p 1 --max-tokens 256\nDescribe the harbour at night"
            expect(panel.locator("textarea").last).to_be_hidden()  # the copyable text is for frontends without it
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


def _open(page, url, token, path):
    page.goto(f"{url}/{path}?token={token}")
    page.wait_for_function(
        "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
        timeout=60_000)


def _output(page, index):
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea")


def test_prompt_cells_renderer_insert_and_themes(jupyterlab):
    from playwright.sync_api import expect, sync_playwright

    url, token, root = jupyterlab
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            _open(page, url, token, "lab/tree/prose.ipynb")
            cells = page.locator(".jp-Notebook .jp-Cell")

            # the prompt cell's editor: our token classes on the options line and the interpolation, no
            # Python classes on the prose (whatever class the theme gives a Python string or keyword)
            prompt = cells.nth(1)
            expect(prompt).to_have_class(re.compile("nbm-prompt-cell"))
            expect(prompt.locator(".nbm-tok-magic")).to_have_text("%%generate")
            assert prompt.locator(".nbm-tok-flag").all_inner_texts() == ["--max-tokens", "-t"]
            expect(prompt.locator(".nbm-tok-interpolation")).to_have_text("{place}")
            python = cells.nth(0).locator(".cm-line")
            string_cls = python.locator("span", has_text="'island'").last.get_attribute("class")
            keyword_cls = python.locator("span", has_text=re.compile("^import$")).first.get_attribute("class")
            assert string_cls and keyword_cls
            # a `%generate` line magic in a Python cell: the magic and its flags marked
            expect(cells.nth(0).locator(".nbm-tok-magic")).to_have_text("%generate")
            flag = cells.nth(0).locator(".nbm-line-magic .nbm-tok-flag")
            expect(flag.first).to_be_visible()
            assert "".join(flag.all_inner_texts()) == "--file"  # (in pieces where Python's tokens split it)
            prose = prompt.locator(".cm-line").nth(1)
            for cls in {*string_cls.split(), *keyword_cls.split()}:
                expect(prose.locator(f".{cls}")).to_have_count(0)
            assert prompt.locator(".cm-content").evaluate("e => getComputedStyle(e).whiteSpace") == "break-spaces" \
                or prompt.locator(".cm-editor .cm-lineWrapping").count() == 1  # lines wrap

            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            # compare: the columns show text while the slowest variant still runs (no table yet)
            page.wait_for_function("() => [...document.querySelectorAll('.nbm-compare .nbm-text')]"
                                   ".some(e => e.textContent.length > 0)")
            assert page.locator("table.nb-model-compare").count() == 0
            expect(page.locator("table.nb-model-compare")).to_have_count(1)
            expect(_output(page, 5)).to_contain_text("refused the key")
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                   ".status === 'idle'")
            expect(page.locator(".nbm-compare")).to_have_count(0)  # the live columns gave way to the table
            row = page.locator("table.nb-model-compare tbody tr").first
            row.hover()
            assert row.evaluate("e => getComputedStyle(e).backgroundColor") == "rgba(0, 0, 0, 0)"  # no hover tint

            # a streamed answer never breaks inside a word
            answer = _output(page, 1).locator("pre").first
            assert answer.evaluate("e => getComputedStyle(e).wordBreak") == "normal"
            split = answer.evaluate(SPLIT_WORDS_JS)
            assert split["words"] > 20 and split["lines"] >= 2 and split["split"] == [], split

            # the cached footer: literal dollars, no maths, in our footer
            footer = _output(page, 2).locator(".nbm-footer-line")
            expect(footer).to_contain_text("cached")
            assert re.search(r"\$0 \(saved \$0\.\d{4}\)", footer.inner_text()), footer.inner_text()
            assert _output(page, 2).locator("mjx-container, .MathJax").count() == 0

            page.screenshot(path=str(OUT / "jupyterlab-light.png"))

            # insert as cell: a markdown answer becomes a markdown cell below its cell
            count = page.evaluate(NOTEBOOK + ".model.cells.length")
            _output(page, 3).locator(".nbm-insert").click()
            page.wait_for_function(f"() => ({NOTEBOOK})().model.cells.length === {count + 1}")
            inserted = page.evaluate(f"""() => {{
                const cells = ({NOTEBOOK})().model.cells;
                const outs = cells.get(3).outputs.toJSON();
                const done = outs.find(o => o.data && o.data['{MIME}'] && o.data['{MIME}'].state === 'done');
                return {{type: cells.get(4).type, source: cells.get(4).sharedModel.getSource(),
                         answer: done.data['text/markdown']}};
            }}""")
            assert inserted["type"] == "markdown" and inserted["source"] == inserted["answer"] != ""

            # dark theme: answer, footer and error text stay readable
            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                          "{theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
            page.wait_for_timeout(500)
            checks = {
                "answer": answer,
                "markdown answer": _output(page, 3).locator(".nbm-generation p").first,
                "footer": footer.locator(".nbm-footer-part").first,
                "error": _output(page, 6).locator("div[style*=border-left]").first,
            }
            ratios = {name: el.evaluate(CONTRAST_JS) for name, el in checks.items()}
            assert all(r >= 4.5 for r in ratios.values()), ratios
            page.screenshot(path=str(OUT / "jupyterlab-dark.png"))
        finally:
            browser.close()


def test_notebook7_loads_the_same_renderer(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    pytest.importorskip("notebook", reason="Notebook 7 is in the browser extra")
    with _jupyter(tmp_path, "notebook") as (url, token, root), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            _open(page, url, token, "notebooks/prose.ipynb")
            expect(page.locator(".nbm-prompt-cell .nbm-tok-interpolation").first).to_have_text("{place}")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            expect(_output(page, 3).locator(".nbm-generation p").first).to_be_visible()
            expect(_output(page, 3).locator(".nbm-footer .nbm-insert")).to_be_visible()
            expect(_output(page, 2).locator(".nbm-footer-line")).to_contain_text("cached")
        finally:
            browser.close()
