"""Secrets stay out of every output; bad settings and awkward moments end in one line, not a traceback."""
import threading

import pytest

import nb_model
from conftest import notices, run, shown

SECRET = "S3CRETPASS-0123456789"


def text_of(cap) -> str:
    return cap.stdout + cap.stderr + "\n".join(shown(cap))


def test_endpoint_credentials_never_shown(shell):
    nb_model.add_profile("creds", endpoint=f"http://user:{SECRET}@127.0.0.1:9", max_retries=0)
    res, cap = run(shell, "%%generate -p creds -o g\nhello")
    assert not res.success and "connection refused" in text_of(cap)
    seen = text_of(cap)
    for line in ("%generate profiles", "%config NbModel.profile = 'creds'", "%generate config"):
        seen += text_of(run(shell, line)[1])
    run(shell, "%config NbModel.profile = None")
    assert SECRET not in seen and SECRET not in (shell.user_ns["g"].error or "")
    assert seen.count("//***@127.0.0.1:9") >= 3


def test_redis_url_password_in_query_is_redacted(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("NB_MODEL_CACHE_URL", f"redis://127.0.0.1:9/0?password={SECRET}")
    res, cap = run(shell, "%%generate --max-tokens 5\nhello")
    assert res.success and len(notices(cap)) == 1
    assert SECRET not in text_of(cap) and "password=***" in text_of(cap)


def test_malformed_cache_url_is_one_warning(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("NB_MODEL_CACHE_URL", "redis://localhost:notaport/0")
    res, cap = run(shell, "%%generate --max-tokens 5 -o g\nhello")
    assert res.success and shell.user_ns["g"].text and "Traceback" not in text_of(cap)
    assert any("is not valid" in n for n in notices(cap))


def test_profile_setting_of_wrong_type_is_one_line(shell, tmp_path):
    (tmp_path / "nb_model.toml").write_text('[profiles.odd]\nendpoint = "http://127.0.0.1:9"\nqps = "fast"\n')
    res, cap = run(shell, "%%generate -p odd\nhello")
    assert not res.success and "profile 'odd': qps must be a number, got 'fast'" in cap.stderr
    assert "Traceback" not in text_of(cap)


def test_bad_out_name_refused_before_sending(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    res, cap = run(shell, "%%generate --out 1x\nhello")
    assert not res.success and "--out needs a variable name" in cap.stderr
    assert sandbox.stats()["requests"] == 0


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


def test_truncation_line_without_an_explicit_max_tokens(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    res, cap = run(shell, "%%generate\nwrite a long essay")
    footer = shown(cap)[-1]
    assert "truncated at the server's default length" in footer and "None" not in footer


ODD_USAGE = [{"prompt_tokens": -100, "completion_tokens": -5}, {"prompt_tokens": True, "completion_tokens": True},
             {"prompt_tokens": 10 ** 30, "completion_tokens": 10 ** 30}, {"prompt_tokens": 3.5, "completion_tokens": "7"}]


def test_odd_values_in_a_reply_are_shown_and_stored(shell, scripted_server, monkeypatch, tmp_path):
    """A lone UTF-16 surrogate in the text and token counts that are negative, booleans or huge: the cell
    shows the text, the counts are estimated instead, the SQLite cache and history take it all."""
    import json
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    nb_model.add_profile("odd", endpoint=scripted_server.url, price_per_1m=12.0)
    for n, usage in enumerate(ODD_USAGE):
        lines = [json.dumps({"text": "bad \ud800 text"}), json.dumps({"text": "", "finish_reason": "stop",
                                                                    "usage": usage})]
        scripted_server.replies = [(200, {"Content-Type": "application/x-ndjson"}, "\n".join(lines).encode())]
        res, cap = run(shell, f"%%generate -p odd -o g\nsay something odd {n}")
        g = shell.user_ns["g"]
        assert res.success and "Traceback" not in text_of(cap), text_of(cap)
        assert g.text == "bad \ufffd text" and g.text in cap.stdout and g.finish_reason == "stop"
        assert 0 < g.usage.prompt_tokens < 100 and 0 < g.usage.completion_tokens < 100 and 0 < g.cost_usd < 0.01
        assert not notices(cap)  # no cache warning: the store took it
        assert run(shell, f"%%generate -p odd -o g\nsay something odd {n}")[0].success
        assert shell.user_ns["g"].cached and shell.user_ns["g"].text == "bad \ufffd text"
    rows = nb_model.history()
    assert len(rows) == 2 * len(ODD_USAGE) and set(rows["text"]) == {"bad \ufffd text"}
    assert rows["prompt_tokens"].between(1, 99).all() and rows["completion_tokens"].between(1, 99).all()


def test_sqlite_store_survives_values_it_cannot_hold(tmp_path):
    from nb_model.cache.sqlite_store import open_sqlite
    from nb_model.results import Generation, Usage
    warned = []
    store = open_sqlite(tmp_path / "c.sqlite", warned.append)
    store.record({"time": 1.0, "text": "ok", "completion_tokens": 10 ** 30})
    store.record({"time": 2.0, "text": "lone \ud800"})
    store.store("k", Generation(text="lone \ud800", usage=Usage(1, 10 ** 30)), "head")
    assert len(warned) == 1 and "cache file" in warned[0] and "\n" not in warned[0]
    store.record({"time": 3.0, "text": "fine", "completion_tokens": 3})
    assert [r["text"] for r in store.history()] == ["fine"]
    store.close()


@pytest.fixture
def new_kernel(monkeypatch):
    """As in a kernel that has not started its embedded sandbox yet (servers the test starts are stopped)."""
    from nb_model.client import embedded
    started: dict = {}
    monkeypatch.setattr(embedded, "_embedded", started)
    yield started
    for server in list(started.values()):
        server.stop()


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


def test_a_cached_answer_in_a_new_kernel_shows_the_same_notice(shell, new_kernel, monkeypatch, tmp_path):
    """nbval re-runs the tutorials on a warm cache: their outputs must not depend on it."""
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    cold = notices(run(shell, "%%generate --max-tokens 3 -o g\nhello")[1])
    assert not shell.user_ns["g"].cached
    new_kernel.pop("sandbox").stop()
    warm = notices(run(shell, "%%generate --max-tokens 3 -o g\nhello")[1])
    assert shell.user_ns["g"].cached and len(cold) == len(warm) == 1


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


def test_endpoint_credentials_stay_out_of_repr_and_cache(sandbox, monkeypatch, tmp_path):
    from nb_model.cache.keys import cache_key
    from nb_model.client import Client, client_for
    from nb_model.config import Profile
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    url = sandbox.url.replace("http://", f"http://user:{SECRET}@")
    prof = nb_model.add_profile("creds", endpoint=url)
    assert SECRET not in repr(prof) and "'http://***@127.0.0.1:" in repr(prof)
    assert not nb_model.generate("hello", profile="creds", max_tokens=5).cached
    assert nb_model.generate("hello", profile="creds", max_tokens=5).cached
    assert client_for(prof) is not client_for(Profile("creds", url.replace(SECRET, "other")))  # repr alike
    for path in tmp_path.glob("cache.sqlite*"):
        assert SECRET.encode() not in path.read_bytes()
    # a URL without credentials keeps the cache key it always had (existing caches stay valid)
    c = Client(Profile("k", "http://127.0.0.1:8000/v1/generate", "openai", "m1"))
    key = cache_key(c.identity(c.spec("hello", max_tokens=5, temperature=0.2)))
    assert key == "230069dbb2df8b4f219ee7c7250de29ebfcee0185e44700f24f886f5cea28178"
