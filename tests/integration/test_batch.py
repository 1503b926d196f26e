"""generate_many and --over: order, templates, errors, interrupts, progress."""

import _thread
import os
import re
import threading
import time
from pathlib import Path

import pytest
from nb_model.batch import generate_many
from nb_model.client import client_for
from nb_model.errors import APIError, ConfigError
from nb_model.sandbox import SandboxServer

from conftest import require, run, settled
from helpers.collected import collected  # noqa: F401 (fixtures)


ROOT = Path(__file__).resolve().parents[2]


def reference(prompts, **params):
    """Each prompt generated alone, to compare the batch's answers with."""
    c = client_for()
    return [c.generate(p, cache="off", **params).text for p in prompts]


def test_results_in_input_order_even_when_finishing_out_of_order(use_endpoint):
    with SandboxServer(port=0, qps=0, token_rate=2000) as server:  # long answers take longer
        use_endpoint(server)
        prompts = [f"Write a long essay on topic {i}" if i % 3 == 0 else f"Name topic {i}" for i in range(9)]
        got = generate_many(prompts, max_workers=4, max_tokens=300, progress=False)
        assert [g.text for g in got] == reference(prompts, max_tokens=300)
        assert {g.finish_reason for g in got} == {"length", "stop"}


def test_series_keeps_index_and_name(sandbox, use_endpoint):
    pd = require("pandas")
    use_endpoint(sandbox)
    prompts = pd.Series(["about owls", "about rivers", "about salt"], index=["o", "r", "s"], name="q")
    got = generate_many(prompts, max_tokens=20, progress=False)
    assert isinstance(got, pd.Series) and list(got.index) == ["o", "r", "s"] and got.name == "q"
    assert [g.text for g in got] == reference(list(prompts), max_tokens=20)


def test_template_filled_from_dicts_rows_items_and_namespace(sandbox, use_endpoint):
    pd = require("pandas")
    use_endpoint(sandbox)
    people = [{"name": "Ada", "field": "math"}, {"name": "Alan", "field": "logic"}]
    template = "Write to {name} about {field} in {tone} words."
    got = generate_many(people, template=template, namespace={"tone": "kind"}, max_tokens=20, progress=False)
    expect = reference(["Write to Ada about math in kind words.", "Write to Alan about logic in kind words."],
                       max_tokens=20)
    assert [g.text for g in got] == expect
    frame = pd.DataFrame(people, index=[10, 20])
    rows = generate_many(frame, template=template, namespace={"tone": "kind"}, max_tokens=20, progress=False)
    assert list(rows.index) == [10, 20] and [g.text for g in rows] == expect
    words = generate_many(["owls", "salt"], template="Tell me about {item}.", max_tokens=20, progress=False)
    assert [g.text for g in words] == reference(["Tell me about owls.", "Tell me about salt."], max_tokens=20)
    sandbox.reset()
    with pytest.raises(ConfigError, match="unknown variable {tone}"):  # fits no item: said once
        generate_many(people, template=template, progress=False)
    with pytest.raises(ConfigError, match="pass template="):
        generate_many([{"name": "Ada"}], progress=False)
    with pytest.raises(ConfigError, match="max_tokens must be"):
        generate_many(["a", "b"], max_tokens=99999, progress=False)
    assert sandbox.stats()["requests"] == 0  # bad input: nothing sent


def test_errors_collected_per_item_with_progress_postfix(sandbox, use_endpoint, capsys):
    use_endpoint(sandbox)
    sandbox.inject("400", times=2)  # the first two requests (one worker: items 0 and 1)
    got = generate_many([f"question {i}" for i in range(5)], max_workers=1, max_tokens=10)
    assert [g.finish_reason == "error" for g in got] == [True, True, False, False, False]
    assert "HTTP 400" in got[0].error and "\n" not in got[0].error and got[2].error is None
    assert "error='HTTP 400" in repr(got[0]) and "error=" not in repr(got[2])  # a failed item says why
    err = capsys.readouterr().err
    assert "generate_many" in err and "prompt/s" in err and "errors=2" in err  # tqdm on stderr, no crash


def test_failed_item_repr_shows_the_error_never_the_key(keyed_sandbox, use_endpoint, monkeypatch):
    from nb_model.results import Generation
    use_endpoint(keyed_sandbox)
    wrong = "sk-wrong-" + "w" * 20
    monkeypatch.setenv("MODEL_API_KEY", wrong)
    got = generate_many(["hello"], progress=False, max_tokens=5)
    assert "finish_reason='error', error='HTTP 401" in repr(got[0]) and "check the key" in repr(got[0])
    assert wrong not in repr(got[0]) and "w" * 20 not in repr(got[0])
    odd = Generation(finish_reason="error", error=f"proxy said: Authorization: Bearer {wrong} rejected\nmore")
    assert wrong not in repr(odd) and "Bearer ***" in repr(odd) and "more" not in repr(odd)


def test_errors_raise_stops_the_batch(sandbox, use_endpoint, capsys):
    use_endpoint(sandbox)
    sandbox.inject("422")
    with pytest.raises(APIError, match="HTTP 422"):
        generate_many([f"question {i}" for i in range(20)], max_workers=1, errors="raise", max_tokens=10)
    assert settled(sandbox, 1)["requests"] <= 2  # the failure stopped the rest
    with pytest.raises(ConfigError, match="errors must be"):
        generate_many(["x"], errors="ignore")


def test_no_progress_bar_when_disabled(sandbox, use_endpoint, capsys):
    use_endpoint(sandbox)
    assert len(generate_many(["a", "b"], progress=False, max_tokens=5)) == 2
    assert generate_many([], progress=False) == []
    assert "generate_many" not in capsys.readouterr().err


def test_interrupt_returns_what_finished_promptly(use_endpoint, collected):
    with SandboxServer(port=0, qps=0, token_rate=200) as slow:
        use_endpoint(slow)
        prompts = ["Name a bird", "Name a fish"] + [f"Write a long essay on river {i}" for i in range(6)]
        threading.Timer(1.5, _thread.interrupt_main).start()
        t = time.perf_counter()
        got = generate_many(prompts, max_workers=2, max_tokens=2048, progress=False)
        elapsed = time.perf_counter() - t
        assert elapsed < 3.5  # interrupted at 1.5 s; the long answers would take ~10 s each
        assert got[0].finish_reason == "stop" and got[1].finish_reason == "stop"
        assert got[2:] == [None] * 6
        assert any("interrupted — 2 of 8 prompts finished" in n for n in collected)
        stats = settled(slow, 4)
        assert stats["completed"] == 2 and stats["requests"] == 4  # the two long streams were cut, no more sent


def test_over_magic_runs_template_per_item_with_compact_summary(shell, sandbox, use_endpoint):
    pd = require("pandas")
    use_endpoint(sandbox)
    shell.user_ns.update(topics=["owls", "rivers", "salt"], level="a child",
                         people=pd.Series([{"name": "Ada"}, {"name": "Alan"}], index=["a", "b"]))
    res, cap = run(shell, "%%generate --over topics --out answers --max-tokens 25\nExplain {item} to {level}.")
    assert res.success, cap.stdout + cap.stderr
    answers = shell.user_ns["answers"]
    assert [g.text for g in answers] == reference([f"Explain {t} to a child." for t in ("owls", "rivers", "salt")],
                                                  max_tokens=25)
    lines = [ln for ln in cap.stdout.splitlines() if ln.strip()]
    assert len(lines) == 4 and all(len(ln) < 120 for ln in lines)  # one row per item + a summary line
    assert "3 prompts · 3 ok" in lines[-1] and "stored in answers" in lines[-1]
    assert "Traceback" not in cap.stdout + cap.stderr
    sandbox.inject("422")
    res, cap = run(shell, "%%generate --over people --out notes --workers 1 --max-tokens 25\nGreet {name}.")
    notes = shell.user_ns["notes"]
    assert res.success and list(notes.index) == ["a", "b"] and notes["a"].finish_reason == "error"
    assert notes["b"].text and "1 failed" in cap.stdout and "HTTP 422" in cap.stdout
    res, cap = run(shell, "%%generate --over nothing_here\n{item}")
    assert not res.success and "no variable of that name" in cap.stderr and "Traceback" not in cap.stderr
    res, cap = run(shell, "%%generate --over level\n{item}")
    assert not res.success and "a list, a pandas Series or a DataFrame" in cap.stderr
    assert run(shell, "1 + 1")[0].result == 2


def test_over_an_empty_list_is_one_line_and_sends_nothing(shell, sandbox, use_endpoint):
    pd = require("pandas")
    use_endpoint(sandbox)
    shell.user_ns.update(empty=[], empty_series=pd.Series([], dtype=object))
    for name in ("empty", "empty_series"):
        res, cap = run(shell, f"%%generate --over {name}\nExplain {{item}}.")
        assert not res.success and cap.stdout == ""
        assert cap.stderr == f"UsageError: --over {name}: the list is empty, nothing to generate; " \
                             "put prompts or items in it\n"
    assert sandbox.stats()["requests"] == 0


def test_progress_bar_in_a_kernel_ends_as_the_final_text(sandbox, tmp_path):
    """A widget's state is not saved with the notebook, only its output's text/plain: the bar's display
    is updated at the end so a saved notebook reads 100%, not the 0% of its first display."""
    from jupyter_client.manager import start_new_kernel
    env = {**os.environ, "NB_MODEL_ENDPOINT": sandbox.url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        msgs = []
        code = "import nb_model\nr = nb_model.generate_many([f'question {i}' for i in range(6)], max_tokens=5)"
        reply = kc.execute_interactive(code, timeout=60, output_hook=msgs.append)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    widget = "application/vnd.jupyter.widget-view+json"
    shown = [m["content"] for m in msgs if m["msg_type"] == "display_data"]
    updated = [m["content"] for m in msgs if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1 and len(updated) == 1, [m["msg_type"] for m in msgs]
    first, last = shown[0], updated[0]
    assert first["transient"]["display_id"] == last["transient"]["display_id"]
    assert first["data"][widget]["model_id"] == last["data"][widget]["model_id"]
    assert first["data"]["text/plain"].startswith("generate_many:   0%")
    assert re.fullmatch(r"generate_many: 100%\|█+\| 6/6 \[\d\d:\d\d<00:00, +[\d.]+prompt/s, errors=0\]",
                        last["data"]["text/plain"]), last["data"]["text/plain"]
    assert not [m for m in msgs if m["msg_type"] == "stream"]  # no text bar besides the widget
