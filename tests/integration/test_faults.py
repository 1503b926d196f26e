"""Fault-injection matrix: the real sandbox server over loopback HTTP, the real client core and
`%%generate` in a real IPython shell. Each fault is either recovered within the retry budget or
reported in one line (partial text kept); the shell stays usable after every case."""
import time

import pytest

from conftest import run, settled, shown
from nb_model.client import client_for
from nb_model.errors import NbModelError

KEY = "sk-test-" + "k" * 24  # the keyed_sandbox fixture's key


@pytest.fixture
def profile_file(tmp_path, monkeypatch):
    """Write a profiles TOML (default profile 'faulty') and point NB_MODEL_CONFIG at it."""
    def write(server, protocol="seed", **settings):
        body = {"endpoint": server.url, "protocol": protocol, "read_timeout": 0.5, "max_retries": 1, **settings}
        lines = ['default = "faulty"', "[profiles.faulty]"]
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in body.items()]
        path = tmp_path / "profiles.toml"
        path.write_text("\n".join(lines) + "\n")
        monkeypatch.setenv("NB_MODEL_CONFIG", str(path))
        from nb_model import client
        client._clients.clear()
    return write


def attempt(via, shell, prompt, max_tokens=30):
    """Generate through the client or the magic: (ok, Generation, message, printed text)."""
    if via == "client":
        stream = client_for().stream(prompt, max_tokens=max_tokens, cache="off")
        try:
            return True, stream.generation, "", "".join(stream)
        except NbModelError as exc:
            return False, stream.generation, f"{type(exc).__name__}: {exc}", stream.generation.text
    shell.user_ns.pop("g", None)
    res, cap = run(shell, f"%%generate --no-cache --max-tokens {max_tokens} -o g\n{prompt}")
    attempt.footer = "\n".join(shown(cap))
    return res.success, shell.user_ns.get("g"), cap.stdout + cap.stderr, cap.stdout


def one_line(message: str, via: str, partial: str = "") -> str:
    """The error as shown: exactly one line (besides the partial text), no traceback."""
    assert "Traceback" not in message
    rest = message.replace(partial, "", 1) if partial else message
    lines = [ln for ln in rest.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def still_usable(shell):
    assert run(shell, "21 * 2")[0].result == 42


VIAS = ["client", "magic"]

# fault, times injected, protocol, max_retries, recovered?, requests the server sees, words in the error
RETRIED = [
    ("429", 1, "seed", 1, True, 2, None),                   # Retry-After: 1 (seconds)
    ("429-no-retry-after", 1, "openai", 1, True, 2, None),  # exponential backoff with jitter
    ("429-ms", 1, "openai-completions", 1, True, 2, None),  # retry-after-ms: 200
    ("429-ms", 2, "seed", 1, False, 2, "HTTP 429"),
    ("500", 2, "openai", 2, True, 3, None),                  # the default budget of 2 retries
    ("502", 1, "seed", 1, True, 2, None),
    ("502", 2, "openai", 1, False, 2, "HTTP 502"),
    ("503", 1, "openai", 1, True, 2, None),
    ("503", 2, "seed", 1, False, 2, "HTTP 503"),
    ("html", 2, "seed", 1, False, 2, "HTML error page"),
    ("html", 1, "openai", 1, True, 2, None),
    ("cut-before", 1, "seed", 1, True, 2, None),
    ("cut-before", 1, "openai", 1, True, 2, None),
    ("stall-before:1.0", 1, "seed", 1, True, 2, None),      # read timeout before any text: retried
    ("400", 1, "seed", 3, False, 1, "HTTP 400"),            # never retried, whatever the budget
    ("404", 1, "openai", 3, False, 1, "HTTP 404"),
    ("422", 1, "seed", 3, False, 1, "HTTP 422"),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("fault, times, protocol, retries, recovered, requests, words", RETRIED,
                         ids=[f"{r[0]}x{r[1]}-{r[2]}" for r in RETRIED])
def test_retried_or_one_line(sandbox, profile_file, shell, via, fault, times, protocol, retries, recovered,
                             requests, words):
    profile_file(sandbox, protocol, max_retries=retries)
    sandbox.inject(fault, times=times)
    t = time.perf_counter()
    ok, gen, message, printed = attempt(via, shell, f"tell me about rivers ({fault} {via})")
    elapsed = time.perf_counter() - t
    assert ok is recovered, message
    if recovered:
        assert gen.text.startswith("[sandbox]") and gen.finish_reason in ("length", "stop") and not gen.error
        if fault == "429":
            assert elapsed >= 0.9  # waited the Retry-After second
        if fault == "429-ms":
            assert 0.18 <= elapsed < 1.5  # waited the 200 ms hint (read as milliseconds, not seconds)
        if via == "magic":
            assert "retrying in" in attempt.footer and f"(1/{retries})" in attempt.footer  # the retry was said, as a notice
            if fault == "429-ms":
                assert "retrying in 0.2 s" in attempt.footer  # the hint, not a default backoff (0.4-0.5 s)
    else:
        line = one_line(message, via)
        assert words in line and "<html" not in line.lower()
        if requests > 1:
            assert f"({requests} attempts)" in line
        assert "req_" not in line and gen.request_id.startswith("req_")  # the id for support, off the one line
        assert gen is not None and gen.finish_reason == "error" and gen.error and not gen.text
    stats = settled(sandbox, requests)
    assert stats["requests"] == requests, stats
    still_usable(shell)


# fault, protocol, words in the error: all strike after the first text was shown
BROKEN = [
    ("cut-after:5", "seed", "closed the connection mid-reply"),
    ("cut-after:5", "openai", "closed the connection mid-reply"),
    ("stall:1.0", "seed", "read timeout"),
    ("stall:1.0", "openai", "read timeout"),
    ("malformed", "seed", "malformed JSON line"),
    ("malformed", "openai", "malformed SSE event"),
    ("error-event", "openai", "simulated mid-stream error"),
    ("error-event", "seed", "simulated mid-stream error"),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("fault, protocol, words", BROKEN, ids=[f"{b[0]}-{b[1]}" for b in BROKEN])
def test_broken_after_text_keeps_partial_and_is_not_restarted(sandbox, profile_file, shell, via, fault,
                                                              protocol, words):
    profile_file(sandbox, protocol, max_retries=2)
    sandbox.inject(fault)
    ok, gen, message, printed = attempt(via, shell, f"tell me about owls ({fault} {via})")
    assert not ok
    assert gen.finish_reason == "error" and gen.text and words in gen.error
    assert gen.text in printed  # the partial text stays in the output
    line = one_line(message, via, partial=gen.text)
    assert words in line and "partial text kept" in line and "re-run the cell" in line
    stats = settled(sandbox, 1, timeout=3)
    assert stats["requests"] == 1, stats  # never silently restarted
    still_usable(shell)


@pytest.mark.parametrize("via", VIAS)
def test_unauthorized_says_check_key_and_never_shows_it(keyed_sandbox, profile_file, shell, monkeypatch, via):
    profile_file(keyed_sandbox, max_retries=2)
    monkeypatch.setenv("MODEL_API_KEY", "sk-wrong-" + "w" * 20)
    ok, gen, message, _ = attempt(via, shell, f"hello ({via})")
    line = one_line(message, via)
    assert not ok and "HTTP 401" in line and "check the key" in line and "$MODEL_API_KEY" in line
    assert "sk-wrong" not in message
    monkeypatch.setenv("MODEL_API_KEY", KEY)  # the right key, but the server refuses anyway
    keyed_sandbox.inject("401")
    ok, gen, message, _ = attempt(via, shell, f"hello again ({via})")
    assert not ok and KEY not in message and "k" * 24 not in message and KEY not in (gen.error or "")
    assert settled(keyed_sandbox, 2)["requests"] == 2  # one each: 401 is not retried
    monkeypatch.delenv("MODEL_API_KEY")
    ok, _, message, _ = attempt(via, shell, f"no key ({via})")
    assert not ok and "unset (looked in $NB_MODEL_API_KEY, $MODEL_API_KEY)" in message
    still_usable(shell)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_2048_token_reply_is_complete_with_finish_length(sandbox, profile_file, shell, via, protocol):
    profile_file(sandbox, protocol)
    ok, gen, message, printed = attempt(via, shell, "Write a long essay about the sea", max_tokens=2048)
    assert ok, message
    assert gen.finish_reason == "length" and gen.usage.completion_tokens == 2048
    assert settled(sandbox, 1)["tokens_out"] == 2048
    if via == "magic":
        assert gen.text in printed
        assert "truncated at max_tokens=2048, the cap: ask for a shorter answer or continue in a --chat" \
            in attempt.footer and "raise --max-tokens" not in attempt.footer  # the user cannot raise it
    still_usable(shell)


@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_content_filter_is_one_warning_line(sandbox, profile_file, shell, protocol):
    profile_file(sandbox, protocol)
    sandbox.inject("filter")
    ok, gen, message, printed = attempt("magic", shell, "tell me about volcanoes")
    assert ok and gen.finish_reason == "content_filter" and gen.text in printed
    warnings = [ln for ln in attempt.footer.splitlines() if "filtered" in ln]
    assert len(warnings) == 1 and "content filter" in warnings[0]


def test_prompt_over_context_window_refused_with_chunking_hint(sandbox, profile_file, shell):
    profile_file(sandbox, context_window=200)
    shell.user_ns["doc"] = "word " * 1000
    res, cap = run(shell, "%%generate\nSummarize: {doc}")
    line = one_line(cap.stdout + cap.stderr, "magic")
    assert not res.success and "context window" in line and "split_text" in line
    assert sandbox.stats()["requests"] == 0
    still_usable(shell)


def test_failed_calls_are_not_charged_in_usage(keyed_sandbox, profile_file, shell):
    """A refused key and a server that is not there: calls counted, no tokens in, no cost."""
    profile_file(keyed_sandbox, max_retries=0, price_per_1m=12.0)
    shell.user_ns["doc"] = "word " * 4000
    assert not run(shell, "%%generate -o g\nSummarize: {doc}")[0].success
    assert shell.user_ns["g"].cost_usd == 0 and shell.user_ns["g"].usage.prompt_tokens == 0
    profile_file(type("Gone", (), {"url": "http://127.0.0.1:9"}), max_retries=0, price_per_1m=12.0)
    assert not run(shell, "%%generate -o g\nSummarize: {doc}")[0].success
    res, cap = run(shell, "%generate usage")
    session = next(ln for ln in cap.stdout.splitlines() if ln.strip().startswith("this session"))
    assert session.split()[2:] == ["2", "0", "0", "0", "$0.0000", "$0.0000"], session
    still_usable(shell)
