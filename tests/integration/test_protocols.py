"""The seed protocol as its docs describe it, at a minimal server written from the docs; protocol mismatches."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nb_model
import pytest
from nb_model.client import Client
from nb_model.config import resolve_profile
from nb_model.errors import ProtocolError, StreamBroken
from nb_model.tokens import estimate_tokens

from conftest import run, shown


PIECES = ["灯塔", "在夜里", "为船只指路。", " Lighthouses guide ships", " at night."]


TEXT = "".join(PIECES)


CLEAN = ("chunked", "close", "length")


CUT = ("cut-chunked", "cut-length", "cut-close")


class DocsAPI(BaseHTTPRequestHandler):
    """POST /<mode>/v1/generate: {"output"} when not streaming, else {"text"} lines framed per <mode>."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _head(self, content_type, headers=()):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def do_POST(self):
        mode = self.path.strip("/").split("/")[0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        if self.headers.get("X-Stream") != "true":
            data = json.dumps({"output": TEXT}, ensure_ascii=False).encode()
            return self._head("application/json", [("Content-Length", str(len(data)))]) or self.wfile.write(data)
        lines = [json.dumps({"text": p}, ensure_ascii=False).encode() + b"\n" for p in PIECES]
        whole = b"".join(lines)
        if mode in ("chunked", "cut-chunked"):
            self._head("application/x-ndjson", [("Transfer-Encoding", "chunked")])
            for line in lines[:2] if mode == "cut-chunked" else lines:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            if mode == "chunked":
                self.wfile.write(b"0\r\n\r\n")
        elif mode in ("length", "cut-length"):
            self._head("application/x-ndjson", [("Content-Length", str(len(whole)))])
            self.wfile.write(whole if mode == "length" else b"".join(lines[:2]))
        else:  # close-delimited HTTP/1.0: the end of the body is the end of the connection
            self.protocol_version = "HTTP/1.0"
            self._head("application/x-ndjson")
            self.wfile.write(whole if mode == "close" else b"".join(lines[:2]) + lines[2][:9])
        self.wfile.flush()
        self.close_connection = True
        if mode.startswith("cut"):
            self.connection.shutdown(socket.SHUT_RDWR)


class Endpoint:
    def __init__(self, base, mode):
        self.url = f"{base}/{mode}"


@pytest.fixture(scope="module")
def docs_api():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DocsAPI)
    httpd.daemon_threads = True
    httpd.bodies = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def point(docs_api, use_endpoint):
    """point(mode): the default profile talks seed to the docs server framed as `mode`; returns the bodies."""
    def go(mode):
        use_endpoint(Endpoint(f"http://127.0.0.1:{docs_api.server_address[1]}", mode))
        docs_api.bodies.clear()
        return docs_api.bodies
    return go


@pytest.mark.parametrize("mode", CLEAN)
def test_stream_ended_cleanly_is_a_complete_answer(point, mode):
    point(mode)
    s = nb_model.stream("用一句话介绍灯塔", max_tokens=50)
    assert "".join(s) == TEXT
    gen = s.generation
    assert gen.finish_reason == "stop" and gen.error is None
    assert gen.usage.estimated and gen.usage.completion_tokens == estimate_tokens(TEXT) >= 15
    assert "~" in repr(gen)


@pytest.mark.parametrize("mode", CUT)
def test_stream_cut_mid_way_stays_broken_with_the_partial_text(point, mode):
    point(mode)
    with pytest.raises(StreamBroken) as err:
        "".join(nb_model.stream("用一句话介绍灯塔", max_tokens=50))
    assert err.value.partial.text.startswith("灯塔在夜里") and err.value.partial.finish_reason == "error"


def test_output_only_reply(point):
    point("length")
    gen = nb_model.generate("用一句话介绍灯塔", max_tokens=50)
    assert gen.text == TEXT and gen.finish_reason == "stop" and gen.usage.estimated


@pytest.mark.parametrize("mode", ["chunked", "close"])
def test_magic_shows_caches_and_labels_the_estimate(point, shell, monkeypatch, mode):
    monkeypatch.delenv("NB_MODEL_CACHE")
    bodies = point(mode)
    cell = "%%generate --max-tokens 50\n用一句话介绍灯塔"
    res, cap = run(shell, cell)
    assert res.success and TEXT in cap.stdout
    footer = "\n".join(shown(cap))
    assert "finish: stop" in footer and "StreamBroken" not in footer + cap.stdout + cap.stderr
    assert "~" in footer and "tokens" in footer  # an estimate, said so
    res, again = run(shell, cell)
    assert res.success and TEXT in again.stdout and "cached" in "\n".join(shown(again))
    assert len(bodies) == 1  # the re-run was a cache hit
    _, hist = run(shell, "%generate history")
    assert "~" in hist.stdout and "stop" in hist.stdout
    _, usage = run(shell, "%generate usage")
    assert "~" in usage.stdout and "estimated by nb_model" in usage.stdout


def test_magic_cut_stream_is_one_line_not_cached(point, shell, monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")
    bodies = point("cut-chunked")
    cell = "%%generate --max-tokens 50\n用一句话介绍灯塔"
    res, cap = run(shell, cell)
    out = cap.stdout + cap.stderr + "\n".join(shown(cap))
    assert "灯塔在夜里" in cap.stdout and "StreamBroken" in out and "Traceback" not in out
    run(shell, cell)
    assert len(bodies) == 2  # a broken answer is never a cache hit


def test_generate_many_completes_every_item(point):
    point("chunked")
    gens = nb_model.generate_many(["灯塔", "冰川", "潮水"], max_tokens=50, progress=False, cache="off")
    assert [g.text for g in gens] == [TEXT] * 3
    assert {g.finish_reason for g in gens} == {"stop"}


def test_panel_run_completes(point, shell):
    from nb_model.panel import Panel
    point("close")
    panel = Panel("用一句话介绍灯塔", shell=shell, max_tokens=50)
    panel.generate_button.click()
    assert panel.wait(10)
    assert panel.text == TEXT
    assert "finish: stop" in panel.status.value and "error" not in panel.status.value.lower()
    assert "~" in panel.status.value  # estimated counts, said so


def test_compare_columns_complete(point, shell):
    point("chunked")
    res, cap = run(shell, '%%generate --compare "temperature=0,1" --max-tokens 50 --no-cache\n用一句话介绍灯塔')
    assert res.success
    plain = "\n".join(shown(cap))
    assert plain.count(TEXT) == 2 and plain.count("finish: stop") == 2 and "error" not in plain.lower()
    assert plain.count(" tokens · ") == 2 and plain.count("~") >= 4  # both columns' counts are estimates


def test_chat_keeps_a_cleanly_ended_answer(point, shell):
    from nb_model.chat import conversation
    bodies = point("chunked")
    res, _ = run(shell, "%%generate --chat docs --no-cache --max-tokens 50\n用一句话介绍灯塔")
    assert res.success and [m["role"] for m in conversation(shell, "docs").messages()] == ["user", "assistant"]
    run(shell, "%%generate --chat docs --no-cache --max-tokens 50\n再说一句")
    assert "灯塔在夜里为船只指路" in bodies[-1]["prompt"]  # the first answer went back as context


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
