"""generate_many, %%generate --over, split_text and summarize_long against the real sandbox server,
and the Redis-shared rate limiter across real processes and a real redis-server."""
import _thread
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import require, run, settled
import nb_model
from nb_model import notices
from nb_model.batch import generate_many, split_spans, split_text, summarize_long
from nb_model.client import client_for, estimate_tokens
from nb_model.errors import APIError, ConfigError
from nb_model.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def collected():
    """Collect the client's one-line notices (and restore the previous handler)."""
    seen = []
    previous = notices.set_notice_handler(seen.append)
    yield seen
    notices.set_notice_handler(previous)


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
    assert not res.success and "list or a pandas Series" in cap.stderr
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


# -- split_text ----------------------------------------------------------------------------
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=12)
SENTENCE = st.lists(WORD, min_size=1, max_size=12).map(lambda ws: " ".join(ws) + ".")
PARAGRAPHS = st.lists(st.lists(SENTENCE, min_size=1, max_size=6), min_size=1, max_size=8)


def check_spans(text, max_tokens, overlap):
    spans = split_spans(text, max_tokens, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)  # the whole text is covered...
    for (a1, b1), (a2, b2) in zip(spans, spans[1:]):
        assert a1 < a2 <= b1 < b2  # ...in order, without gaps, each chunk adding new text
    for a, b in spans:
        assert estimate_tokens(text[a:b]) <= max_tokens
    assert split_text(text, max_tokens, overlap) == [c for c in (text[a:b].strip() for a, b in spans) if c]
    return spans


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=600), max_tokens=st.integers(1, 60), data=st.data())
def test_split_covers_any_text_within_budget(text, max_tokens, data):
    check_spans(text, max_tokens, data.draw(st.integers(0, max_tokens - 1)))


@settings(max_examples=60, deadline=None)
@given(paragraphs=PARAGRAPHS, extra=st.integers(0, 60), data=st.data())
def test_split_prose_cuts_at_sentence_or_paragraph_boundaries(paragraphs, extra, data):
    text = "\n\n".join(" ".join(p) for p in paragraphs)
    max_tokens = max(estimate_tokens(s + "\n\n") for p in paragraphs for s in p) + extra
    spans = check_spans(text, max_tokens, data.draw(st.integers(0, max_tokens // 2)))
    for a, _ in spans[1:]:  # every sentence fits the budget, so no chunk starts mid-sentence
        assert text[:a].rstrip().endswith(".") and text[a - 1].isspace()


def test_split_overlaps_and_refuses_bad_budgets():
    text = "\n\n".join(f"Paragraph {p}. " + " ".join(f"Sentence {p}.{s} has five words." for s in range(8))
                       for p in range(6))
    spans = split_spans(text, 60, 15)
    assert len(spans) > 3 and all(a2 < b1 for (_, b1), (a2, _) in zip(spans, spans[1:]))  # they overlap
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(split_spans(text, 60, 0), split_spans(text, 60, 0)[1:]))
    for bad in ({"max_tokens": 0}, {"overlap": 60}, {"overlap": -1}):
        with pytest.raises(ConfigError):
            split_text(text, **{"max_tokens": 60, **bad})
    assert split_text("   \n\n  ", 10) == []
    for bad in (None, 123, b"bytes", ["a list"]):
        with pytest.raises(ConfigError, match="split_text needs the text as a string"):
            split_text(bad)
        with pytest.raises(ConfigError, match="summarize_long needs the text as a string"):
            summarize_long(bad, progress=False)


def test_summarize_long_maps_then_reduces(sandbox, use_endpoint):
    use_endpoint(sandbox)
    text = "\n\n".join(" ".join(f"The delta {p} carries silt number {s} to the sea." for s in range(12))
                       for p in range(20))
    chunks = split_text(text, 400, 40)
    final = summarize_long(text, chunk_tokens=400, overlap=40, max_tokens=20, progress=False)  # one reduce
    stats = settled(sandbox, len(chunks) + 1)
    assert final.text.startswith("[sandbox]") and final.finish_reason in ("length", "stop")
    assert stats["requests"] == len(chunks) + 1 and stats["by_status"] == {"200": len(chunks) + 1}
    assert final.usage.completion_tokens == stats["tokens_out"]  # usage adds up every call
    sandbox.reset()
    short = summarize_long("A short note about owls.", max_tokens=20, progress=False)
    assert short.text and settled(sandbox, 1)["requests"] == 1


# -- the rate limiter shared through Redis -------------------------------------------------
WORKER = """
import json, sys, time
from nb_model.batch import generate_many
start_at, n, tag = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start_at - time.time()))
t = time.time()
got = generate_many([f"{tag} prompt {i}" for i in range(n)], max_workers=4, progress=False, cache="off",
                    max_retries=0, max_tokens=5)
print(json.dumps({"errors": [g.error for g in got if g.finish_reason == "error"], "start": t, "end": time.time()}))
"""


def run_processes(server, tmp_path, limit_url, procs=3, each=15):
    env = {**os.environ, "NB_MODEL_ENDPOINT": server.url, "NB_MODEL_LIMIT_URL": limit_url,
           "PYTHONPATH": str(ROOT), "NB_MODEL_LOCAL": "off"}
    start_at = time.time() + 1.5  # every process is imported and waiting by then
    children = [subprocess.Popen([sys.executable, "-c", WORKER, str(start_at), str(each), f"p{n}"], env=env,
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in range(procs)]
    out = []
    for child in children:
        stdout, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.redis
def test_redis_limiter_keeps_several_processes_under_the_server_limit(redis_server, tmp_path):
    with SandboxServer(port=0, qps=20) as server:  # the seed API's limit; the client profile says 20 too
        url = f"{redis_server}?namespace=t{uuid.uuid4().hex[:8]}"
        shared = run_processes(server, tmp_path, url)
        stats = server.wait_idle()
        assert stats["by_status"].get("429", 0) == 0 and all(not r["errors"] for r in shared), stats
        assert stats["requests"] == 45
        span = max(r["end"] for r in shared) - min(r["start"] for r in shared)
        assert 2.0 <= span < 5.0  # 45 requests at 20/s together (each process alone would take 0.75 s)
        assert min(r["end"] for r in shared) > max(r["start"] for r in shared)  # they really overlapped
        server.reset()
        alone = run_processes(server, tmp_path, "local")  # the control: each process limits only itself
        assert server.wait_idle()["by_status"].get("429", 0) > 0
        assert any("HTTP 429" in e for r in alone for e in r["errors"])


@pytest.mark.redis
def test_profile_cache_url_shares_the_limit_by_endpoint_and_key(redis_server, sandbox, monkeypatch, collected):
    """A profile's cache_url also shares its rate limit; profiles of any name calling the same endpoint with
    the same key share one schedule in Redis, keyed without the key itself."""
    from nb_model.limits import RedisBucket
    url = f"{redis_server}?namespace=t{uuid.uuid4().hex[:8]}"
    key, other = "sk-limit-" + "x" * 20, "sk-other-" + "y" * 20
    monkeypatch.setenv("MODEL_API_KEY", key)
    monkeypatch.setenv("OTHER_KEY", other)
    for name, extra in (("shared", {}), ("same-key", {}), ("other-key", {"key_env": "OTHER_KEY"})):
        nb_model.add_profile(name, endpoint=sandbox.url, cache_url=url, qps=5.0, **extra)
    a, b, c = (client_for(name).limiter for name in ("shared", "same-key", "other-key"))
    assert all(isinstance(limiter, RedisBucket) for limiter in (a, b, c))
    assert a.key == b.key != c.key and sandbox.url in a.key
    assert not any(secret in k for k in (a.key, c.key) for secret in (key, other, "x" * 20, "y" * 20))
    t = time.perf_counter()
    for limiter in (a, b) * 3:  # one schedule at 5/s with a burst of 2: four waits of 0.2 s
        limiter.acquire()
    assert time.perf_counter() - t >= 0.7
    t = time.perf_counter()
    c.acquire()
    c.acquire()
    assert time.perf_counter() - t < 0.15  # another key: its own schedule
    assert client_for("shared").generate("hello", max_tokens=3, cache="off").text
    assert not [n for n in collected if "rate limit" in n]  # Redis answered: no fallback


def test_unreachable_redis_is_one_warning_and_the_local_limit(sandbox, use_endpoint, monkeypatch, collected):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("NB_MODEL_LIMIT_URL", f"redis://:secret-pw@127.0.0.1:{port}/0")
    use_endpoint(sandbox)
    got = generate_many([f"q {i}" for i in range(6)], max_tokens=5, progress=False)
    assert all(g.finish_reason in ("length", "stop") for g in got)
    warned = [n for n in collected if "shared rate limit" in n]
    assert len(warned) == 1 and "unavailable" in warned[0] and "requests/s" in warned[0]
    assert "secret-pw" not in warned[0] and "\n" not in warned[0]
