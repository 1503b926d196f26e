"""Compare: the --compare magic, its table and plain text, columns streaming, stop and interrupt."""

import time
from itertools import pairwise

import pytest
from nb_model.display.frontend import MIME
from nb_model.panel import Panel
from nb_model.sandbox import SandboxServer

from conftest import run, run_interrupted
from helpers.kernel import kernel  # noqa: F401 (fixtures)
from helpers.kernel import replay, run_cell
from helpers.panel import direct, run_panel, until
from helpers.panel import slow  # noqa: F401 (fixtures)


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


def test_compare_columns_stream_before_the_slowest_variant_ends(kernel):
    run_cell(kernel, "embedded_sandbox().token_rate = 100")
    msgs = run_cell(kernel, "%%generate --compare max_tokens=8,200\nwrite a long essay about tides")
    live = [m["content"]["data"] for m in msgs if m["msg_type"] == "update_display_data"
            and m["content"]["data"].get(MIME, {}).get("kind") == "compare"]
    states = [[c["state"] for c in d[MIME]["columns"]] for d in live]
    assert ["done", "streaming"] in states, states  # the short one finished, the long one still coming
    growing = [d[MIME]["columns"][1]["text"] for d in live]
    assert len(set(growing) - {""}) >= 2 and all(b.startswith(a) for a, b in pairwise(growing)), growing
    table = next(i for i, m in enumerate(msgs) if m["msg_type"] == "display_data" and "text/html" in m["content"]["data"]
                 and "nb-model-compare" in m["content"]["data"]["text/html"])
    last_live = max(i for i, m in enumerate(msgs) if m["msg_type"] == "update_display_data"
                    and m["content"]["data"].get(MIME, {}).get("kind") == "compare")
    assert last_live < table
    saved, recorded = replay(msgs)
    assert not any(o.get(MIME, {}).get("kind") == "compare" for o in saved + recorded)  # emptied: the table stays
