"""The client core over real HTTP against the sandbox server, both protocols."""
import threading
import time

import pytest

import nb_model
from nb_model.client import Client, backoff_delay
from nb_model.config import resolve_profile
from nb_model.errors import APIError, ConfigError, ConnectionFailed, Interrupted

PROTOCOLS = ["seed", "openai", "openai-completions"]


def client(server, protocol="seed", **over):
    prof = resolve_profile("sandbox", endpoint=server.url, protocol=protocol, **over)
    return Client(prof)


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


def test_key_sent_as_bearer_and_never_in_errors(keyed_sandbox, monkeypatch):
    key = "sk-test-" + "k" * 24
    c = client(keyed_sandbox)
    with pytest.raises(APIError) as info:
        c.generate("hi", max_tokens=5)
    assert info.value.status == 401 and "MODEL_API_KEY" in str(info.value) and key not in str(info.value)
    monkeypatch.setenv("MODEL_API_KEY", key)
    assert c.generate("hi", max_tokens=5).text
    assert key not in repr(c.profile) and key not in str(c.profile.summary())


def test_connection_refused_is_one_line():
    prof = resolve_profile("sandbox", endpoint="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(ConnectionFailed) as info:
        Client(prof).generate("hi")
    assert "connection refused" in str(info.value) and "\n" not in str(info.value)


def test_read_timeout_before_text_is_retried_then_reported(sandbox):
    c = client(sandbox, read_timeout=0.3, max_retries=1)
    sandbox.inject("stall-before:1", times=2)
    t = time.perf_counter()
    with pytest.raises(ConnectionFailed, match="read timeout"):
        c.generate("hi", max_tokens=5)
    assert time.perf_counter() - t < 3
    assert sandbox.wait_idle()["requests"] == 2  # once the stalled handlers have finished


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


def test_backoff_honours_server_hints():
    assert backoff_delay(0, {"Retry-After": "3"}) == 3
    assert backoff_delay(0, {"retry-after-ms": "200"}) == pytest.approx(0.2)
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3 <= backoff_delay(0, {"Retry-After": date}) <= 5.5
    assert 0.375 <= backoff_delay(0) <= 0.5 and 6 <= backoff_delay(10) <= 8
    for unreadable in ("soon", "Mon, 99 Foo 2024 25:61:00 GMT", "Fri, 31 Dec 99999 23:59:59 GMT", ""):
        assert 0.375 <= backoff_delay(0, {"Retry-After": unreadable}) <= 0.5  # the default backoff


def test_unreadable_retry_after_is_retried_with_backoff(scripted_server):
    scripted_server.replies = [(429, {"Retry-After": "soon"}, b'{"error": "slow down"}'),
                               (200, {}, b'{"output": "fine now", "finish_reason": "stop"}')]
    prof = resolve_profile("sandbox", endpoint=scripted_server.url, max_retries=1)
    assert Client(prof).generate("hi").text == "fine now"
    assert scripted_server.requests == 2


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
    prompt = "word " * 12000  # about 15000 tokens
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


def test_unknown_cache_mode_is_one_line(sandbox):
    for bad in ("sometimes", True, None):
        with pytest.raises(ConfigError) as info:
            client(sandbox).generate("x", cache=bad)
        assert "'use', 'refresh', 'off'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cache must be one of"):
        nb_model.generate_many(["x"], cache="sometimes", progress=False)
    assert sandbox.stats()["requests"] == 0


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
