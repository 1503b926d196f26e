"""Secrets stay out of every output; bad settings and awkward moments end in one line, not a traceback."""
import threading

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
