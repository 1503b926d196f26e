"""The widget panel and compare mode: real ipywidgets driven through their API (`button.click()`),
a real sandbox server over loopback HTTP, a real IPython InteractiveShell. No mocks."""
import subprocess
import sys
import time

import pytest

from conftest import run, run_interrupted
from nb_model.client import client_for
from nb_model.panel import Panel
from nb_model.sandbox import SandboxServer


@pytest.fixture
def slow():
    """A sandbox streaming 25 tokens/s, so a run lasts long enough to press Stop."""
    with SandboxServer(port=0, qps=0, token_rate=25) as server:
        yield server


def direct(prompt, **params):
    """The same request straight through the client core (the sandbox is deterministic)."""
    return client_for("env").generate(prompt, cache="off", **params)


def until(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def run_panel(panel, timeout=10):
    panel.generate_button.click()
    assert panel.wait(timeout), "the run did not end"


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


def test_compare_columns_stream_concurrently_with_own_stats(use_endpoint):
    with SandboxServer(port=0, qps=0, token_rate=60) as server:
        use_endpoint(server)
        panel = Panel("Describe a market", max_tokens=24, compare="temperature=0,1.5; top_p=0.5,1")
        t = time.perf_counter()
        run_panel(panel)
        elapsed = time.perf_counter() - t
        wants = [direct("Describe a market", temperature=tp, top_p=p, max_tokens=24)
                 for tp in (0.0, 1.5) for p in (0.5, 1.0)]
    assert elapsed < 2.5 * max(w.latency_s for w in wants)  # four 0.4 s streams side by side, not one after another (4x)
    assert panel.text == [w.text for w in wants]
    labels = [c.header.value for c in panel._columns]
    assert labels == ["<b>temperature=0.0 · top_p=0.5</b>", "<b>temperature=0.0 · top_p=1.0</b>",
                      "<b>temperature=1.5 · top_p=0.5</b>", "<b>temperature=1.5 · top_p=1.0</b>"]
    assert all("tokens" in c.stats.value and "first token" in c.stats.value for c in panel._columns)
    assert "4 variants" in panel.status.value
    assert [g.params["temperature"] for g in panel.history[0].generations] == [0.0, 0.0, 1.5, 1.5]
    assert "--compare 'temperature=0,1.5; top_p=0.5,1'" in panel.cell_source()


def test_compare_stop_stops_every_column(slow, use_endpoint):
    use_endpoint(slow)
    panel = Panel("write a long essay about ships", max_tokens=800, compare="max_tokens=700,800")
    panel.generate_button.click()
    until(lambda: all(panel.text))
    panel.stop_button.click()
    assert panel.wait(0.5)
    assert [g.finish_reason for g in panel.history[0].generations] == ["stopped", "stopped"]
    assert all(c.stats.value.count("finish: stopped") == 1 for c in panel._columns)


def test_compare_magic_table_out_and_stable_plain_text(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    monkeypatch.delenv("NB_MODEL_CACHE")
    shell.user_ns["place"] = "a harbour"
    cell = '%%generate --compare "temperature=0.2,0.8; top_p=0.5,1" --max-tokens 30 -o g\nDescribe {place}'
    res, cap = run(shell, cell)
    assert res.success
    gens = shell.user_ns["g"]
    assert [(g.params["temperature"], g.params["top_p"]) for g in gens] == [(0.2, 0.5), (0.2, 1.0), (0.8, 0.5), (0.8, 1.0)]
    for g in gens:
        assert g.text == direct("Describe a harbour", temperature=g.params["temperature"],
                                top_p=g.params["top_p"], max_tokens=30).text
    (out,) = cap.outputs
    html, plain = out.data["text/html"], out.data["text/plain"]
    assert html.count("<th ") == 4 and "temperature=0.8 · top_p=0.5" in html and "first token" in html
    assert plain.splitlines()[0] == "== temperature=0.2 · top_p=0.5 =="
    assert "finish: length" in plain and "first token" not in plain
    assert [c["params"]["top_p"] for c in out.metadata["nb_model"]["compare"]] == [0.5, 1.0, 0.5, 1.0]
    until(lambda: sandbox.stats()["requests"] == 4 + 4)  # the cell's four and the direct four
    _, again = run(shell, cell)
    assert again.outputs[0].data["text/plain"] == plain  # deterministic for nbval
    assert all(g.cached for g in shell.user_ns["g"]) and sandbox.stats()["requests"] == 8
    res, _ = run(shell, cell.replace("-o g", "-o g --no-cache"))
    assert res.success and not any(g.cached for g in shell.user_ns["g"])
    until(lambda: sandbox.stats()["requests"] == 12)


def test_compare_magic_models_and_profiles(shell, sandbox, use_endpoint, tmp_path):
    (tmp_path / "nb_model.toml").write_text(f'[profiles.chat]\nendpoint = "{sandbox.url}"\nprotocol = "openai"\n')
    use_endpoint(sandbox)
    res, cap = run(shell, '%%generate --compare "profile=env,chat" --max-tokens 10 -o g\nhello')
    assert res.success and [g.profile for g in shell.user_ns["g"]] == ["env", "chat"]
    res, cap = run(shell, '%%generate --compare "model=alpha,beta" --max-tokens 10 -o g\nhello')
    assert res.success and "model=alpha" in cap.outputs[0].data["text/plain"]


@pytest.mark.parametrize("spec, expect", [
    ("temperature=0.2", "makes 1 variant(s)"),
    ("temperature=0.1,0.2,0.3; top_p=0.5,1", "makes 6 variant(s)"),
    ("temperature=a,b", "temperature needs numbers"),
    ("top_k=1.5,2", "top_k needs integers"),
    ("colour=red,blue", "cannot read 'colour=red,blue'"),
    ("temperature=0.2,0.8; temperature=1,2", "temperature is given twice"),
    ("temperature=0.2,,0.8", "empty value"),
    ("temperature=1,3", "temperature must be between 0 and 2"),
    ("profile=env,nowhere", "unknown profile 'nowhere'"),
    ("temperature=0.2,0.8\" --chat \"c", "--compare cannot be combined with --chat"),
    ("temperature=0.2,0.2", "temperature lists a value twice"),
    ("", "makes 1 variant(s)"),
    ("colour=red|blue", "cannot read 'colour=red|blue'"),  # no {colour} in the prompt
    ("temperature=0.2,0.8\" -f \"markdown", "drop -f markdown"),
    ("prompt=Describe a cat|Describe a dog", "leave the prompt empty, or write {prompt}"),
])
def test_bad_compare_specs_are_one_line_usage_errors(shell, sandbox, use_endpoint, spec, expect):
    use_endpoint(sandbox)
    res, cap = run(shell, f'%%generate --compare "{spec}"\nhello')
    lines = [ln for ln in (cap.stdout + cap.stderr).splitlines() if ln.strip()]
    assert type(res.error_in_exec).__name__ == "UsageError" and len(lines) == 1 and expect in lines[0]
    assert sandbox.stats()["requests"] == 0  # nothing was sent


def test_compare_prompts_systems_and_template_variables(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    res, cap = run(shell, '%%generate --compare "topic=rain, cold|snow" --max-tokens 12 -o g\nDescribe {topic}')
    assert res.success and [g.text for g in shell.user_ns["g"]] == [
        direct(f"Describe {t}", max_tokens=12).text for t in ("rain, cold", "snow")]
    assert cap.outputs[0].data["text/plain"].splitlines()[0] == "== topic=rain, cold =="
    res, cap = run(shell, '%%generate --compare "prompt=Describe a cat|Describe a dog" --max-tokens 12 -o g\n{prompt}')
    assert res.success and [g.text for g in shell.user_ns["g"]] == [
        direct(p, max_tokens=12).text for p in ("Describe a cat", "Describe a dog")]
    systems = ("Answer in one word.", "Answer as a poem, please.")
    res, cap = run(shell, f'%%generate --compare "system={"|".join(systems)}; temperature=0,1" --max-tokens 12 '
                          '-o g\nDescribe a river')
    assert res.success and [g.text for g in shell.user_ns["g"]] == [
        direct("Describe a river", system=s, temperature=t, max_tokens=12).text for s in systems for t in (0, 1)]
    assert "system=Answer as a poem, please. · temperature=1" in cap.outputs[0].data["text/html"]


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


def test_compare_magic_failure_keeps_the_table(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    sandbox.inject("401")
    res, cap = run(shell, '%%generate --compare "temperature=0.2,0.8" --max-tokens 10 -o g\nhello')
    text = cap.stdout + cap.stderr
    assert not res.success and "HTTP 401" in text and "Traceback" not in text
    gens = shell.user_ns["g"]
    assert sorted(bool(g.text) for g in gens) == [False, True]
    assert "HTTP 401" in cap.outputs[0].data["text/html"] and "error: HTTP 401" in cap.outputs[0].data["text/plain"]


def test_compare_magic_interrupt_keeps_partial_texts(shell, slow, use_endpoint):
    use_endpoint(slow)
    res, cap, seconds = run_interrupted(
        shell, '%%generate --compare "temperature=0.2,0.8" --max-tokens 500 -o g\nwrite a long essay')
    assert seconds < 2.0
    gens = shell.user_ns["g"]
    assert not res.success and all(g.text and g.finish_reason == "stopped" for g in gens)
    assert "Interrupted" in cap.stdout + cap.stderr and "Traceback" not in cap.stdout + cap.stderr
    assert run(shell, "3 + 4")[0].result == 7


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
