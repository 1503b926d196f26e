"""The client core: streaming and whole replies, the embedded sandbox, interrupts, connections, one-line errors."""

from __future__ import annotations

import json
import threading
import time

import nb_model
import pytest
from nb_model.client import Client
from nb_model.config import resolve_profile
from nb_model.errors import APIError, ConfigError, ConnectionFailed, Interrupted

from conftest import notices, run
from helpers.client import client
from helpers.new_kernel import new_kernel  # noqa: F401 (fixtures)
from helpers.new_kernel import text_of
from helpers.seed_server import cache_on, seed_server  # noqa: F401 (fixtures)


PROTOCOLS = ["seed", "openai", "openai-completions"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_and_whole_give_same_text(sandbox, protocol):
    c = client(sandbox, protocol)
    whole = c.generate("Write a long essay on entropy", max_tokens=60, temperature=0.7, seed=3)
    s = c.stream("Write a long essay on entropy", max_tokens=60, temperature=0.7, seed=3)
    deltas = list(s)
    assert len(deltas) > 5  # really streamed, piece by piece
    assert "".join(deltas) == s.generation.text == whole.text
    assert whole.text.startswith("[sandbox]")
    for g in (whole, s.generation):
        assert g.model == "sandbox" and g.finish_reason == "length"
        assert g.usage.completion_tokens == 60 and g.usage.prompt_tokens > 0
        assert g.latency_s > 0 and g.ttft_s is not None and g.ttft_s <= g.latency_s
    assert s.generation.cost_usd == pytest.approx(s.generation.usage.total_tokens * 12 / 1e6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_natural_stop_and_language(sandbox, protocol):
    g = client(sandbox, protocol).generate("Bonjour", language="fr", max_tokens=500, temperature=0)
    assert g.finish_reason == "stop"
    if protocol == "seed":  # seed sends the field; openai sends a system hint the sandbox does not read
        assert any(w in g.text for w in (" le ", " la ", " les "))


def test_public_api_uses_embedded_sandbox_and_says_once(capsys):
    g = nb_model.generate("hello there", max_tokens=8)
    g2 = nb_model.generate("hello again", max_tokens=8)
    assert g.text.startswith("[sandbox]") and g2.model == "sandbox"
    err = capsys.readouterr().err
    assert err.count("embedded sandbox") <= 1  # said once per process (maybe earlier in the run)
    s = nb_model.stream("hi", max_tokens=5)
    assert "".join(s) == s.generation.text


def test_params_validated_before_sending(sandbox):
    c = client(sandbox)
    for bad in ({"temperature": 2.5}, {"top_p": 0}, {"max_tokens": 0}, {"max_tokens": 4096}, {"top_k": 0},
                {"nonsense": 1}):
        with pytest.raises(ConfigError) as info:
            c.generate("x", **bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="empty"):
        c.generate("   ")
    assert sandbox.stats()["requests"] == 0


def test_context_window_refused_before_sending(sandbox):
    c = client(sandbox, context_window=100)
    with pytest.raises(ConfigError, match="context window"):
        c.generate("word " * 500)
    assert sandbox.stats()["requests"] == 0


def test_connection_refused_is_one_line():
    prof = resolve_profile("sandbox", endpoint="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(ConnectionFailed) as info:
        Client(prof).generate("hi")
    assert "connection refused" in str(info.value) and "\n" not in str(info.value)


def test_close_from_another_thread_stops_stream(monkeypatch):
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0, token_rate=20) as slow:
        s = client(slow).stream("long essay please", max_tokens=400)
        got = []
        threading.Timer(0.5, s.close).start()
        t = time.perf_counter()
        for d in s:
            got.append(d)
        assert time.perf_counter() - t < 1.5
        assert s.generation.finish_reason == "stopped" and 0 < len(got) < 400


def test_keyboard_interrupt_keeps_partial():
    import _thread
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0, token_rate=20) as slow:
        s = client(slow).stream("long essay please", max_tokens=400)
        threading.Timer(0.6, _thread.interrupt_main).start()
        t = time.perf_counter()
        with pytest.raises(Interrupted) as info:
            for _ in s:
                pass
        assert time.perf_counter() - t < 1.5
        assert info.value.partial.text and info.value.partial.finish_reason == "interrupted"


def test_failed_calls_cost_nothing(keyed_sandbox, sandbox):
    """No answer, no charge: a refused key or a server that is not there; a stream cut after text did cost."""
    prompt = "word " * 4000
    refused = client(keyed_sandbox).stream(prompt, max_tokens=5)
    with pytest.raises(APIError):
        refused.text()
    nowhere = Client(resolve_profile("sandbox", endpoint="http://127.0.0.1:9", max_retries=0)).stream(prompt)
    with pytest.raises(ConnectionFailed):
        nowhere.text()
    for gen in (refused.generation, nowhere.generation):
        assert gen.finish_reason == "error" and gen.cost_usd == 0 and gen.usage.total_tokens == 0
    sandbox.inject("cut-after:5")
    partial = client(sandbox).stream(prompt, max_tokens=50)
    with pytest.raises(APIError):
        partial.text()
    gen = partial.generation
    assert gen.text and gen.usage.prompt_tokens >= 4000 and gen.cost_usd > 0.048


def test_context_window_counts_the_reply_budget(sandbox):
    c = client(sandbox)  # a 16384-token window
    prompt = "word " * 15000  # about 15000 tokens
    with pytest.raises(ConfigError) as info:
        c.generate(prompt, max_tokens=2048)
    line = str(info.value)
    assert "\n" not in line and "15000 tokens" in line and "2048" in line and "16384-token context window" in line
    assert "lower max_tokens to at most 1384" in line and "split_text" in line
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(ConfigError, match="the chat .* max_tokens reserves 2048 .* chat reset"):
        c.generate(prompt, messages=chat, max_tokens=2048)
    assert sandbox.stats()["requests"] == 0
    assert c.generate(prompt, max_tokens=1000).text  # fits with a smaller reply: sent, and the server agrees


def test_session_reuses_connections(sandbox):
    c = client(sandbox)
    for _ in range(3):
        c.generate("hi", max_tokens=3)
    pool = c.session.get_adapter(sandbox.url).poolmanager
    assert sum(len(p.pool.queue) if p.pool else 0 for p in pool.pools._container.values()) >= 1


def test_close_while_waiting_for_the_first_byte(sandbox):
    """Stop works before the server answered at all (a stalled server, a queued local model)."""
    c = client(sandbox, read_timeout=30)
    sandbox.inject("stall-before:5", times=1)
    s = c.stream("hello", max_tokens=5)
    threading.Timer(0.3, s.close).start()
    t = time.perf_counter()
    assert list(s) == []
    assert time.perf_counter() - t < 1.0
    assert s.generation.finish_reason == "stopped"
    assert c.generate("hello again", max_tokens=5).text  # the pool still works afterwards


@pytest.mark.parametrize("endpoint", ["localhost:8000", "not a url", "http:///v1"])
def test_a_bad_url_reaching_the_client_is_a_setting_error_not_retried(endpoint):
    from nb_model.config import Profile
    retries = []
    t = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        Client(Profile("raw", endpoint)).generate("hi", on_retry=retries.append)
    assert time.perf_counter() - t < 0.5 and retries == []
    line = str(info.value)
    assert "profile 'raw': endpoint" in line and "valid http(s) URL" in line and "server is running" not in line


def test_unknown_host_is_named():
    prof = resolve_profile("sandbox", endpoint="http://no-such-host.invalid:8000", max_retries=0)
    with pytest.raises(ConnectionFailed) as info:
        Client(prof).generate("hi")
    line = str(info.value)
    assert "cannot resolve host no-such-host.invalid" in line and "check the endpoint of profile 'sandbox'" in line
    assert "server is running" not in line


# -- leaving a stream early -------------------------------------------------------------------------------
def test_leaving_the_loop_early_stops_the_stream_and_says_so(sandbox):
    s = client(sandbox).stream("write a long essay", max_tokens=200)
    for piece in s:
        break
    gen = s.generation
    assert piece and gen.text == piece and gen.finish_reason == "stopped"
    assert gen.latency_s is not None and gen.usage.completion_tokens > 0 and s._response is None
    with pytest.raises(Interrupted, match="stopped early .* partial text is in .generation.text") as info:
        list(s)
    assert info.value.partial is gen
    with pytest.raises(Interrupted):
        s.text()
    whole = client(sandbox).stream("write a long essay", max_tokens=20)
    text = whole.text()
    assert list(whole) == [text] and whole.text() == text  # a finished answer replays whole


SECRET = "S3CRETPASS-0123456789"


def test_interrupt_outside_the_read_still_finishes_the_generation(shell, sandbox, use_endpoint, monkeypatch):
    """An interrupt landing in the display code is handled by the stream: usage, timing and the line."""
    import _thread
    from nb_model import display
    use_endpoint(sandbox)
    calls = {"n": 0}
    write = display.LiveOutput.write

    def slow_write(self, delta):
        calls["n"] += 1
        if calls["n"] == 5:
            _thread.interrupt_main()  # arrives while this frame (not the socket read) runs
            threading.Event().wait(0.2)
        write(self, delta)

    monkeypatch.setattr(display.LiveOutput, "write", slow_write)
    res, cap = run(shell, "%%generate --max-tokens 50 -o g\nwrite a long essay")
    g = shell.user_ns["g"]
    assert not res.success and "Interrupted" in cap.stdout and "Traceback" not in cap.stdout
    assert g.finish_reason == "interrupted" and g.latency_s is not None and g.usage.completion_tokens > 0


def test_embedded_sandbox_starts_with_the_first_valid_request(shell, new_kernel):
    res, cap = run(shell, "%%generate -t 3\nhello")
    assert not res.success and notices(cap) == [] and new_kernel == {}  # one error line, nothing started
    assert cap.stderr.strip() == "UsageError: temperature must be between 0 and 2, got 3.0"
    res, cap = run(shell, "%%generate --max-tokens 3\nhello")
    assert res.success and len(notices(cap)) == 1 and "using the embedded sandbox" in notices(cap)[0]
    assert not notices(run(shell, "%%generate --max-tokens 3\nhello again")[1])


def test_embedded_sandbox_starts_once_for_concurrent_first_requests(new_kernel):
    from nb_model import notices
    said = []
    previous = notices.set_notice_handler(said.append)
    try:
        start = threading.Barrier(6)
        results = []

        def one(n):
            start.wait()
            results.append(nb_model.generate(f"hello {n}", max_tokens=3))

        threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 6 and all(g.text.startswith("[sandbox]") for g in results)
        assert len(said) == 1 and len(new_kernel) == 1
        new_kernel.pop("sandbox").stop()
        said.clear()
        assert all(nb_model.generate_many(["a", "b", "c", "d"], max_workers=4, max_tokens=3, progress=False))
        assert len(said) == 1 and len(new_kernel) == 1
    finally:
        notices.set_notice_handler(previous)


def test_fallback_notice_says_which_settings_are_ignored(shell, new_kernel, monkeypatch):
    from nb_model.config import ignored_env_note
    monkeypatch.setenv("NB_MODEL_MODEL", "gpt-4o")
    monkeypatch.setenv("MODEL_API_KEY", SECRET)
    res, cap = run(shell, "%%generate --max-tokens 3\nhello")
    assert res.success and len(notices(cap)) == 1
    assert notices(cap)[0].endswith(
        "(NB_MODEL_MODEL and MODEL_API_KEY are set but NB_MODEL_ENDPOINT is not: they are ignored)")
    assert SECRET not in text_of(cap)
    monkeypatch.delenv("MODEL_API_KEY")
    monkeypatch.delenv("NB_MODEL_MODEL")
    monkeypatch.setenv("NB_MODEL_PROTOCOL", "openai")
    assert ignored_env_note() == " (NB_MODEL_PROTOCOL is set but NB_MODEL_ENDPOINT is not: it is ignored)"
    monkeypatch.setenv("NB_MODEL_ENDPOINT", "http://127.0.0.1:9")
    assert ignored_env_note() == ""


def test_python_api_with_a_lone_surrogate(seed_server, use_endpoint, cache_on):
    import nb_model
    use_endpoint(seed_server)
    gen = nb_model.generate("x \udce9")
    again = nb_model.generate("x \udce9")
    assert gen.text == again.text and again.cached and len(seed_server.bodies) == 1
    assert json.loads(seed_server.bodies[0].decode("utf-8"))["prompt"] == "x \ufffd"
