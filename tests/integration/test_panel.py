"""The Panel widget: running, stop, rate-bounded updates, cache toggle, history, To cell."""

import subprocess
import sys
import time

import pytest
from nb_model.panel import Panel
from nb_model.sandbox import SandboxServer

from conftest import run
from helpers.panel import direct, run_panel, until
from helpers.panel import slow  # noqa: F401 (fixtures)


def test_generate_fills_prompt_streams_text_and_stats(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    shell.user_ns["topic"] = "lighthouses"
    panel = Panel("Describe {topic} for {{kids}}", shell=shell, temperature=0.3, top_k=20, max_tokens=40)
    assert panel.stop_button.disabled and not panel.generate_button.disabled
    run_panel(panel)
    want = direct("Describe lighthouses for {kids}", temperature=0.3, top_p=1.0, top_k=20, max_tokens=40)
    assert panel.text == want.text and want.text.startswith("[sandbox]")
    status = panel.status.value
    for part in ("tokens", "first token", "total", "finish: length", "$", "truncated at max_tokens=40"):
        assert part in status
    assert "Traceback" not in status
    gen = panel.history[0].generations[0]
    assert gen.params == {"temperature": 0.3, "top_p": 1.0, "top_k": 20, "max_tokens": 40}
    assert not panel.generate_button.disabled and panel.stop_button.disabled
    until(lambda: sandbox.stats()["requests"] == 2)  # the panel's and the direct one (recorded after replying)


def test_running_state_and_stop_keeps_partial_text(slow, use_endpoint):
    use_endpoint(slow)
    panel = Panel("write a long essay about tides", max_tokens=1000)
    panel.generate_button.click()
    assert panel.running and panel.generate_button.disabled and not panel.stop_button.disabled
    assert panel.clear_button.disabled
    panel.generate_button.click()  # ignored while running
    until(lambda: len(panel.text) > 20)
    t = time.perf_counter()
    panel.stop_button.click()
    assert panel.wait(0.5), "Stop did not close the stream within 0.5 s"
    assert time.perf_counter() - t < 0.5
    gen = panel.history[0].generations[0]
    assert gen.finish_reason == "stopped" and gen.text and panel.text == gen.text
    assert gen.usage.completion_tokens < 100
    assert "finish: stopped" in panel.status.value
    assert not panel.generate_button.disabled and panel.stop_button.disabled
    until(lambda: slow.stats()["requests"] == 1)


def test_stop_while_server_is_silent(slow, use_endpoint):
    use_endpoint(slow)
    slow.inject("stall:5")  # first token, then five seconds of silence
    panel = Panel("tell me about gardens", max_tokens=200)
    panel.generate_button.click()
    until(lambda: panel.text)
    t = time.perf_counter()
    panel.stop()
    assert panel.wait(0.5) and time.perf_counter() - t < 0.5
    assert panel.history[0].generations[0].finish_reason == "stopped"


def test_output_updates_are_rate_bounded(use_endpoint):
    with SandboxServer(port=0, qps=0, token_rate=3000) as fast:
        use_endpoint(fast)
        panel = Panel("write a long essay about rivers", max_tokens=2000, cache=False)
        panel.generate_button.click()
        updates = []
        panel._columns[0].body.observe(lambda ch: updates.append(time.monotonic()), names="value")
        t = time.monotonic()
        assert panel.wait(20)
        elapsed = time.monotonic() - t
    tokens = panel.history[0].generations[0].usage.completion_tokens
    assert tokens > 1000 and elapsed > 0.3
    assert len(updates) <= 20 * elapsed + 2, (len(updates), elapsed)
    assert panel.text.endswith(panel.history[0].generations[0].text[-50:])  # the final update was sent


@pytest.mark.parametrize("setup, expect", [
    ("fault401", "HTTP 401"),
    ("compare=temperature=abc,1", "compare: temperature needs numbers"),
    ("prompt=Tell me about {nowhere}", "unknown variable {nowhere}"),
    ("prompt=   ", "the prompt is empty"),
])
def test_errors_are_one_line_in_the_panel(sandbox, use_endpoint, setup, expect):
    use_endpoint(sandbox)
    panel = Panel("hello there", max_tokens=30)
    if setup == "fault401":
        sandbox.inject("401")
    else:
        name, _, value = setup.partition("=")
        getattr(panel, name).value = value
    run_panel(panel)
    status = panel.status.value
    assert expect in status and "Traceback" not in status and status.count("<div") == 1
    assert not panel.generate_button.disabled and panel.stop_button.disabled
    assert sandbox.stats()["requests"] == (1 if setup == "fault401" else 0)
    sandbox.reset()
    panel.prompt.value, panel.compare.value = "hello again", ""
    run_panel(panel)  # the panel stays usable
    assert panel.text.startswith("[sandbox]") and expect not in panel.status.value


def test_profile_cap_bounds_max_tokens(sandbox, tmp_path):
    (tmp_path / "nb_model.toml").write_text(
        f'[profiles.small]\nendpoint = "{sandbox.url}"\nmax_tokens_cap = 64\n'
        f'[profiles.big]\nendpoint = "{sandbox.url}"\nmax_tokens_cap = 4096\nmodel = "big-model"\n')
    panel = Panel("hi", profile="big", max_tokens=1000)
    assert panel.max_tokens.max == 4096 and panel.max_tokens.value == 1000
    assert "big-model" in panel.model.options
    panel.profile.value = "small"
    assert panel.max_tokens.max == 64 and panel.max_tokens.value == 64
    run_panel(panel)
    assert panel.history[0].generations[0].params["max_tokens"] == 64


def test_cache_toggle_replays_and_bypasses(sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    monkeypatch.delenv("NB_MODEL_CACHE")  # the cache file goes to ./.nb_model/ in the test's folder
    panel = Panel("Describe orchards", max_tokens=20)
    run_panel(panel)
    until(lambda: sandbox.stats()["requests"] == 1)
    run_panel(panel)
    assert panel.history[1].generations[0].cached and "cached" in panel.status.value
    assert panel.history[1].generations[0].text == panel.history[0].generations[0].text
    panel.cache.value = False
    run_panel(panel)
    assert not panel.history[2].generations[0].cached and "cached" not in panel.status.value
    until(lambda: sandbox.stats()["requests"] == 2)
    assert panel.cell_source().splitlines()[0].endswith("--no-cache")


def test_history_reshows_earlier_runs(sandbox, use_endpoint):
    use_endpoint(sandbox)
    panel = Panel("Describe harbours", max_tokens=30, temperature=0.0)
    run_panel(panel)
    first = panel.text
    panel.temperature.value, panel.prompt.value = 1.5, "Describe mountains"
    run_panel(panel)
    second = panel.text
    assert first != second and len(panel.history) == 2
    assert [label for label, _ in panel.history_select.options] == ["#1 Describe harbours", "#2 Describe mountains"]
    assert panel.history_select.value == 1 and not panel.history_select.disabled
    panel.history_select.value = 0  # as a user picking from the dropdown
    assert panel.text == first and panel.temperature.value == 0.0 and panel.prompt.value == "Describe harbours"
    assert "finish:" in panel.status.value
    panel.clear_button.click()
    assert panel.text == [] and panel.status.value == "" and len(panel.history) == 2


def test_to_cell_reproduces_the_run(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    shell.user_ns["topic"] = "volcanoes"
    panel = Panel("Explain {topic}", shell=shell, max_tokens=25, top_k=5, language="fr",
                  system="Be brief.", temperature=0.4)
    run_panel(panel)
    panel.cell_button.click()
    source = shell.rl_next_input
    assert source == panel.cell_text.value and panel.cell_text.layout.display is None
    assert source.splitlines()[0] == ("%%generate -p env -t 0.4 --top-p 1 --top-k 5 --max-tokens 25 "
                                      "--language fr -s 'Be brief.'")
    res, cap = run(shell, source.replace("%%generate ", "%%generate -o g ", 1))
    assert res.success and shell.user_ns["g"].text == panel.text
    panel.system.value = """Don't ramble; say "why"."""  # both kinds of quote
    run_panel(panel)
    panel.cell_button.click()
    res, cap = run(shell, shell.rl_next_input.replace("%%generate ", "%%generate -o g ", 1))
    assert res.success and shell.user_ns["g"].text == panel.text
    import shlex
    words = shlex.split(shell.rl_next_input.splitlines()[0])
    assert words[words.index("-s") + 1] == """Don't ramble; say "why"."""


def test_panel_compares_template_variables(sandbox, use_endpoint):
    use_endpoint(sandbox)
    panel = Panel("Describe {topic}", max_tokens=12, compare="topic=rain|snow")
    run_panel(panel)
    assert panel.text == [direct(f"Describe {t}", max_tokens=12, temperature=0.7).text for t in ("rain", "snow")]


def test_panel_refuses_values_its_knobs_cannot_hold(sandbox, use_endpoint):
    from nb_model.errors import ConfigError
    use_endpoint(sandbox)
    for bad, words in (({"temperature": 5}, "temperature must be between 0 and 2"),
                       ({"top_k": 5000}, "top_k up to 1000"), ({"max_tokens": 0}, "max_tokens must be")):
        with pytest.raises(ConfigError, match=words):
            Panel("hello", **bad)


def test_panel_subcommand_displays_the_widget(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    run(shell, "%config NbModel.temperature = 0.25")
    try:
        res, cap = run(shell, "%generate panel Describe tides")
    finally:
        run(shell, "%config NbModel.temperature = None")
    panel = res.result
    assert panel.prompt.value == "Describe tides" and panel.temperature.value == 0.25
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == "nb_model Panel (profile 'env')"
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
    res, cap = run(shell, "%generate help")
    assert "%generate panel" in cap.stdout


def test_loading_the_extension_does_not_import_widgets():
    code = ("import sys, nb_model, nb_model.magics, nb_model.compare; "
            "from IPython.core.interactiveshell import InteractiveShell; "
            "InteractiveShell.instance().run_line_magic('load_ext', 'nb_model'); "
            "print(sorted(m for m in ('ipywidgets', 'nb_model.panel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
