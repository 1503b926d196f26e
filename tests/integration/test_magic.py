"""The %%generate magic: streaming, interpolation, --out, interrupts, one-line errors."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import notices, run, run_interrupted, shown
from helpers.seed_server import cache_on, seed_server  # noqa: F401 (fixtures)


def test_generate_streams_footer_and_out(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    shell.user_ns["audience"] = "students"
    res, cap = run(shell, "%%generate --max-tokens 40 -t 0.7 --top-p 0.9 --top-k 20 -o g\n"
                          "Explain quantum computing for {audience}. Keep {\"json\": true} as is.")
    assert res.success, cap.stdout
    g = shell.user_ns["g"]
    assert g.text.startswith("[sandbox]") and g.text in cap.stdout
    assert g.params == {"max_tokens": 40, "temperature": 0.7, "top_p": 0.9, "top_k": 20}
    footer = cap.outputs[-1].data["text/plain"]
    assert "sandbox" in footer and "tokens" in footer and "first token" in footer and "finish: length" in footer
    assert "truncated at max_tokens=40" in footer
    assert cap.outputs[-1].metadata["nb_model"]["params"]["temperature"] == 0.7
    # interpolation really happened, braces that are not references stayed
    assert sandbox.stats()["requests"] == 1


def test_interpolation_rules(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    shell.user_ns.update(items=["alpha", "beta"], cfg={"k": "v"})
    from nb_model.template import fill
    assert fill("{items[1]} {cfg['k']} {{x}} {not a ref} {1}", shell.user_ns) == "beta v {x} {not a ref} {1}"
    res, cap = run(shell, "%%generate\nTell me about {nothing_here}")
    assert not res.success
    assert "unknown variable {nothing_here}" in cap.stderr and "Traceback" not in cap.stdout + cap.stderr
    assert sandbox.stats()["requests"] == 0
    res, cap = run(shell, "%%generate --no-interpolate --max-tokens 5\nLiteral {nothing_here}")
    assert res.success


@pytest.mark.parametrize("line, expect", [
    ("-t 3", "temperature must be between 0 and 2"),
    ("--top-p 1.5", "top_p must be in (0, 1]"),
    ("--max-tokens 0", "max_tokens must be an integer from 1 to 2048"),
    ("--max-tokens 5000", "max_tokens must be an integer from 1 to 2048"),
    ("--bogus", "unrecognized arguments: --bogus"),
    ("-p nowhere", "unknown profile 'nowhere'"),
    ("-f pdf", "invalid choice"),
    ('--chat ""', "--chat needs a conversation name"),
    ("-o class", "--out needs a variable name, got 'class'"),
    ('-s "unclosed', "cannot read the options: No closing quotation"),
])
def test_bad_input_is_one_line_and_nothing_sent(shell, sandbox, use_endpoint, line, expect):
    use_endpoint(sandbox)
    res, cap = run(shell, f"%%generate {line}\nhello")
    assert not res.success
    text = cap.stdout + cap.stderr
    assert expect in text and "Traceback" not in text
    assert len([ln for ln in text.splitlines() if ln.strip()]) <= 2
    assert sandbox.stats()["requests"] == 0
    res, cap = run(shell, "1 + 1")  # the shell stays usable
    assert res.result == 2


def test_empty_prompt(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    res, cap = run(shell, "%%generate\n\n   \n")
    assert not res.success and "prompt is empty" in cap.stderr


def test_no_stream_and_openai_protocol(shell, sandbox, use_endpoint):
    use_endpoint(sandbox, protocol="openai")
    res, cap = run(shell, "%%generate --no-stream --max-tokens 20 -s 'Be brief.' -o g\nhello")
    assert res.success and shell.user_ns["g"].usage.completion_tokens > 0
    assert shell.user_ns["g"].text in cap.stdout


def test_server_error_is_one_line_with_key_advice(shell, keyed_sandbox, use_endpoint, monkeypatch):
    use_endpoint(keyed_sandbox)
    monkeypatch.setenv("MODEL_API_KEY", "wrong-key-0123456789")
    res, cap = run(shell, "%%generate\nhello")
    text = cap.stdout + cap.stderr
    assert not res.success and "HTTP 401" in text and "$MODEL_API_KEY" in text
    assert "wrong-key-0123456789" not in text and "Traceback" not in text
    assert run(shell, "2 * 3")[0].result == 6


def test_interrupt_keeps_partial_text(shell, use_endpoint):
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0, token_rate=25) as slow:
        use_endpoint(slow)
        res, cap, seconds = run_interrupted(shell, "%%generate --max-tokens 500 -o g\nwrite a long essay")
        assert seconds < 2.0
    g = shell.user_ns["g"]
    assert not res.success and g.finish_reason == "interrupted" and g.text
    assert g.text in cap.stdout and "Interrupted" in cap.stdout and "Traceback" not in cap.stdout
    assert run(shell, "3 + 4")[0].result == 7


def test_help_lists_options(shell):
    doc = shell.find_cell_magic("generate").__doc__
    for opt in ("--max-tokens", "--temperature", "--top-p", "--top-k", "--language", "--system", "--format",
                "--out", "--no-stream", "--profile", "--model"):
        assert opt in doc


def test_sandbox_server_accessor_survives_subpackage_import():
    import nb_model
    from nb_model.config import resolve_profile
    import nb_model.sandbox  # noqa: F401 - the subpackage import must not hide the accessor
    resolve_profile()
    server = nb_model.sandbox_server()
    assert server.url.startswith("http://127.0.0.1:") and server is nb_model.sandbox_server()


class _EmptyAnswers(BaseHTTPRequestHandler):
    """A model that answers nothing (as a base model behind a chat endpoint does): chat completions, SSE or
    JSON, and the seed API, each with finish_reason stop and 12 prompt tokens."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        usage = {"prompt_tokens": 12, "completion_tokens": 0}
        if self.path.endswith("/chat/completions") and body.get("stream"):
            events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                      {"choices": [], "usage": usage}]
            kind, payload = "text/event-stream", "".join(f"data: {json.dumps(e)}\n\n" for e in events) + \
                "data: [DONE]\n\n"
        elif self.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
            kind, payload = "application/json", json.dumps({"choices": [choice], "usage": usage})
        elif self.headers.get("X-Stream") == "true":
            kind, payload = "application/x-ndjson", '{"text": ""}\n' + json.dumps(
                {"text": "", "finish_reason": "stop", "usage": usage}) + "\n"
        else:
            kind, payload = "application/json", json.dumps({"output": "", "finish_reason": "stop", "usage": usage})
        data = payload.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def empty_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyAnswers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("protocol, option, warning", [
    ("openai", "", "no text: a base model on a chat endpoint? try protocol openai-completions"),
    ("openai", "--no-stream", "no text: a base model on a chat endpoint? try protocol openai-completions"),
    ("seed", "", "the model returned no text"),
])
def test_empty_answer_says_why_in_the_footer(shell, empty_server, use_endpoint, protocol, option, warning):
    use_endpoint(empty_server, protocol=protocol, model="base-7b")
    res, cap = run(shell, f"%%generate {option} -o g\nThe capital of France is")
    assert res.success and shell.user_ns["g"].text == "" and cap.stdout == ""
    line, *warnings = shown(cap)[-1].splitlines()
    assert line.startswith("— base-7b · 12 → 0 tokens · ") and " · finish: stop" in line
    assert warnings == [f"⚠ {warning}"]


def test_bad_out_name_refused_before_sending(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    res, cap = run(shell, "%%generate --out 1x\nhello")
    assert not res.success and "--out needs a variable name" in cap.stderr
    assert sandbox.stats()["requests"] == 0


# -- lone surrogates ------------------------------------------------------------------------------------
def test_a_lone_surrogate_in_a_cell_is_sent_as_u_fffd_with_one_line(shell, seed_server, use_endpoint, cache_on):
    use_endpoint(seed_server)
    shell.user_ns["name"] = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    cell = "%%generate --no-stream -o g\nSummarize the file {name}"
    results = [run(shell, cell) for _ in range(2)]
    assert all(res.success for res, _ in results), results[0][1].stderr
    assert all("Traceback" not in cap.stderr + cap.stdout for _, cap in results)
    said = [n for _, cap in results for n in notices(cap)]
    assert len(said) == 1 and "sent as U+FFFD" in said[0] and "\n" not in said[0], said
    assert len(seed_server.bodies) == 1 and shell.user_ns["g"].cached  # stored and replayed
    sent = json.loads(seed_server.bodies[0].decode("utf-8"))  # strict UTF-8
    assert sent["prompt"] == "Summarize the file caf\ufffd.txt"


# -- --out names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["_", "__", "___", "_i", "_ii", "_iii", "_i3", "_3", "_oh", "_ih", "_dh", "In",
                                  "Out", "get_ipython", "exit", "quit", "print", "list", "__name__"])
def test_out_refuses_ipythons_and_pythons_own_names_in_one_line(shell, seed_server, use_endpoint, name):
    use_endpoint(seed_server)
    before = shell.user_ns.get(name, "absent")
    res, cap = run(shell, f"%%generate -o {name}\nTell me about tides")
    assert not res.success and "Traceback" not in cap.stdout
    message = str(res.error_in_exec)
    assert "\n" not in message and f"--out {name}" in message and "pick another name" in message, message
    assert seed_server.bodies == [] and shell.user_ns.get(name, "absent") is before
    assert run(shell, "get_ipython() is not None")[0].result is True  # the shell still works


def test_out_still_takes_ordinary_names(shell, seed_server, use_endpoint):
    use_endpoint(seed_server)
    res, _ = run(shell, "%%generate --no-stream -o _answer\nTell me about tides")
    assert res.success and shell.user_ns["_answer"].text == "Tides follow the moon."
