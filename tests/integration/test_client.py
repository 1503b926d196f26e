"""The client core over real HTTP against the sandbox server, both protocols."""
import math
import threading
import time

import pytest

import nb_model
from nb_model.client import Client, backoff_delay
from nb_model.config import resolve_profile
from nb_model.errors import APIError, ConfigError, ConnectionFailed, Interrupted, ProtocolError

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


# -- settings that can never work: one ConfigError line, nothing sent, no retry ---------------------------
@pytest.mark.parametrize("endpoint", ["localhost:8000", "not a url", "ftp://example.com/v1", "http://", "http://h:99x"])
def test_endpoint_that_is_not_an_http_url_is_refused_where_it_is_set(endpoint, monkeypatch, tmp_path):
    with pytest.raises(ConfigError) as info:
        nb_model.add_profile("bad", endpoint=endpoint)
    line = str(info.value)
    assert line.startswith("profile 'bad': endpoint") and "http://127.0.0.1:8000/v1/generate" in line
    assert "\n" not in line
    (tmp_path / "nb_model.toml").write_text(f'[profiles.file]\nendpoint = "{endpoint}"\n')
    with pytest.raises(ConfigError, match="profile 'file': endpoint"):
        nb_model.generate("hi", profile="file")
    (tmp_path / "nb_model.toml").unlink()
    monkeypatch.setenv("NB_MODEL_ENDPOINT", endpoint)
    with pytest.raises(ConfigError, match=r"^\$NB_MODEL_ENDPOINT: endpoint .* is not a URL"):
        nb_model.generate("hi")


def test_endpoint_credentials_stay_out_of_the_endpoint_error():
    with pytest.raises(ConfigError) as info:
        nb_model.add_profile("bad", endpoint="localhost:8000?api_key=SECRET123")
    assert "SECRET123" not in str(info.value)


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


@pytest.mark.parametrize("key", ["sk-abc\ndef", "sk-clé-1234", "sk-abc def", "sk-abc\tdef"])
def test_a_key_that_cannot_go_in_a_header_is_refused_unseen(keyed_sandbox, monkeypatch, key):
    monkeypatch.setenv("MODEL_API_KEY", key)
    retries = []
    with pytest.raises(ConfigError) as info:
        client(keyed_sandbox).generate("hi", max_tokens=5, on_retry=retries.append)
    line = str(info.value)
    assert line == "the key in $MODEL_API_KEY contains characters not allowed in an HTTP header: set it again"
    assert retries == [] and keyed_sandbox.stats()["requests"] == 0
    monkeypatch.setenv("MY_KEY", "  sk-test-" + "k" * 24 + "\n")  # spaces around it are trimmed: fine
    assert client(keyed_sandbox, key_env="MY_KEY").generate("hi", max_tokens=5).text


@pytest.mark.parametrize("setting, value, words", [
    ("read_timeout", -1, "read_timeout must be above 0, got -1"),
    ("connect_timeout", 0, "connect_timeout must be above 0"),
    ("max_tokens_cap", 0, "max_tokens_cap must be above 0, got 0"),
    ("context_window", -5, "context_window must be above 0"),
    ("qps", -1, "qps must be 0 or more, got -1"),
    ("qps", float("nan"), "qps must be 0 or more"),
    ("max_retries", -1, "max_retries must be 0 or more, got -1"),
    ("price_per_1m", -0.5, "price_per_1m must be 0 or more"),
])
def test_profile_numbers_out_of_range_are_refused_at_load(setting, value, words, tmp_path):
    with pytest.raises(ConfigError) as info:
        nb_model.add_profile("odd", endpoint="http://127.0.0.1:9", **{setting: value})
    assert str(info.value).startswith("profile 'odd': " + words) and "\n" not in str(info.value)
    if not math.isnan(value):  # TOML spells NaN differently
        (tmp_path / "nb_model.toml").write_text(f'[profiles.odd]\nendpoint = "http://127.0.0.1:9"\n{setting} = {value}\n')
        with pytest.raises(ConfigError, match="profile 'odd': " + words.split(",")[0]):
            nb_model.generate("hi", profile="odd")
    with pytest.raises(ConfigError, match=words.split(",")[0]):
        resolve_profile("sandbox", **{setting: value})
    nb_model.add_profile("free", endpoint="http://127.0.0.1:9", qps=0, max_retries=0, price_per_1m=0)


# -- protocol mismatch and error objects inside a 200 reply ----------------------------------------
SSE_REPLY = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'


def test_seed_profile_reading_an_sse_stream_says_to_check_the_protocol(scripted_server):
    scripted_server.replies = [(200, {"Content-Type": "text/event-stream"}, SSE_REPLY)]
    c = Client(resolve_profile("sandbox", endpoint=scripted_server.url))
    with pytest.raises(ProtocolError) as info:
        c.stream("hi").text()
    line = str(info.value)
    assert "malformed JSON line" in line and \
        "check that profile 'sandbox' uses the right protocol (seed | openai | openai-completions)" in line
    assert scripted_server.requests == 1
    scripted_server.replies = [(200, {}, b'{"choices": [{"message": {"content": "hi"}}]}')]
    with pytest.raises(ProtocolError, match=r"no \"output\" field; check that profile 'sandbox' uses the right "
                                            r"protocol \(seed \| openai"):
        c.generate("hi")


@pytest.mark.parametrize("protocol, line", [
    ("seed", b'{"error": {"message": "model overloaded"}}\n'),
    ("openai", b'data: {"error": {"message": "model overloaded", "code": 400}}\n\n'),
])
def test_error_object_before_text_is_the_servers_message_not_retried(scripted_server, protocol, line):
    scripted_server.replies = [(200, {"Content-Type": "text/event-stream"}, line)]
    c = Client(resolve_profile("sandbox", endpoint=scripted_server.url, protocol=protocol, max_retries=2))
    with pytest.raises(APIError) as info:
        c.stream("hi").text()
    assert type(info.value) is APIError and "model overloaded" in str(info.value)
    assert "server is running" not in str(info.value) and "attempts" not in str(info.value)
    assert scripted_server.requests == 1
    scripted_server.replies = [(200, {}, b'{"error": "model overloaded"}')]  # the same in a whole reply
    with pytest.raises(APIError, match="model overloaded"):
        c.generate("hi")
    assert scripted_server.requests == 2


def test_error_object_with_a_retryable_status_is_retried(scripted_server):
    scripted_server.replies = [(200, {}, b'{"error": {"message": "busy, try again", "code": 503}}\n'),
                               (200, {}, b'{"text": "fine now"}\n{"text": "", "finish_reason": "stop"}\n')]
    c = Client(resolve_profile("sandbox", endpoint=scripted_server.url, max_retries=1))
    retries = []
    assert c.stream("hi", on_retry=retries.append).text() == "fine now"
    assert scripted_server.requests == 2 and "busy, try again" in retries[0]


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
