"""Tools (function calling) through the real magic and real HTTP: the sandbox on both protocols, a minimal
OpenAI-style server written here from the API's documented stream shape (tool_calls deltas split across
events and HTTP chunks), a real Jupyter Server relay."""
from __future__ import annotations

import io
import json
import sys
import time
from http.server import BaseHTTPRequestHandler
from typing import Literal, Optional

import pytest
from helpers.loopback import Loopback

from conftest import run, run_interrupted, shown

SALES = {"Q2": {"North": 100, "South": 80}, "Q3": {"North": 120, "South": 95}}
QUESTION = "Which region sold most in Q3, and what are the top products of the North?"


def sales_by_region(quarter: str) -> dict:
    """Total sales per region for a quarter like 'Q3'."""
    return SALES[quarter]


def top_products(region: Literal["North", "South"], n: int = 2) -> list:
    """Best-selling products of a region.

    Args:
        region: the region's name
        n: how many products
    """
    return {"North": ["tea", "cake", "jam"], "South": ["coffee"]}[region][:n]


@pytest.fixture
def tools_ns(shell):
    calls = []

    def counted(fn):
        def wrapper(**kw):
            calls.append((fn.__name__, kw))
            return fn(**kw)
        wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
        import inspect
        wrapper.__signature__ = inspect.signature(fn)
        wrapper.__annotations__ = fn.__annotations__
        return wrapper
    shell.user_ns.update(sales_by_region=counted(sales_by_region), top_products=counted(top_products))
    return calls


def call_lines(cap) -> list[str]:
    return [t for t in shown(cap) if t[:1] in "🔧✗⊘⏱⏹"]


# -- schemas -------------------------------------------------------------------------------------

try:
    from pydantic import BaseModel

    class Window(BaseModel):
        start: int
        end: int
except ImportError:  # the test extra installs it; without it only the pydantic test is skipped
    Window = None


def test_schema_of_every_supported_type():
    if Window is None:
        pytest.skip("pydantic is not installed")
    from nb_model.tools import as_tool

    def f(name: str, count: int, ratio: float, flag: bool, mode: Literal["a", "b"], ids: list[int],
          weights: dict[str, float], pair: tuple[str, int], many: tuple[int, ...], note: Optional[str] = None,
          level: int | None = 3, window: Window | None = None, anything=None) -> str:
        """Does f.

        More text that is not the description.

        :param name: who
        """
    schema = as_tool(f).schema
    assert schema["name"] == "f" and schema["description"] == "Does f."
    p = schema["parameters"]
    assert p["required"] == ["name", "count", "ratio", "flag", "mode", "ids", "weights", "pair", "many"]
    props = p["properties"]
    assert props["name"] == {"type": "string", "description": "who"}
    assert props["count"] == {"type": "integer"} and props["ratio"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean"}
    assert props["mode"] == {"type": "string", "enum": ["a", "b"]}
    assert props["ids"] == {"type": "array", "items": {"type": "integer"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["pair"] == {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                             "minItems": 2, "maxItems": 2}
    assert props["many"] == {"type": "array", "items": {"type": "integer"}}
    assert props["note"] == {"type": ["string", "null"]} and props["level"] == {"type": ["integer", "null"]}
    assert props["window"]["type"] == ["object", "null"]
    assert props["window"]["properties"]["start"] == {"title": "Start", "type": "integer"}
    assert props["anything"] == {}
    doc = as_tool(top_products).schema["parameters"]["properties"]
    assert doc["region"]["description"] == "the region's name" and doc["n"]["description"] == "how many products"


def test_decorator_overrides_name_description_and_params():
    import nb_model
    from nb_model.tools import as_tool

    @nb_model.tool(name="orders", description="Rows of the orders table.",
                   params={"where": "a SQLite condition", "limit": {"type": "integer", "minimum": 1}})
    def query_orders(where: str, limit: int = 10):
        return []
    schema = as_tool(query_orders).schema
    assert schema["name"] == "orders" and schema["description"] == "Rows of the orders table."
    assert schema["parameters"]["properties"] == {"where": {"type": "string", "description": "a SQLite condition"},
                                                  "limit": {"type": "integer", "minimum": 1}}
    assert query_orders("x") == []  # still the plain function


# -- the sandbox, both protocols, through the magic ----------------------------------------------

@pytest.mark.parametrize("protocol, options", [("openai", ""), ("seed", ""), ("openai", "--no-stream")])
def test_multi_step_loop_shows_each_call_and_out_keeps_the_exchange(shell, sandbox, use_endpoint, tools_ns,
                                                                   protocol, options):
    use_endpoint(sandbox, protocol)
    res, cap = run(shell, f"%%generate --tools sales_by_region,top_products {options} -o g\n{QUESTION}")
    assert res.success, cap.stderr
    g = shell.user_ns["g"]
    assert tools_ns == [("sales_by_region", {"quarter": "Q3"}), ("top_products", {"region": "North"})]
    assert g.text == ('[sandbox] sales_by_region returned {"North": 120, "South": 95}. '
                      'top_products returned ["tea", "cake"].')
    assert g.text in cap.stdout and '"tool"' not in cap.stdout  # an emulated call is not shown as text
    lines = call_lines(cap)
    assert [ln.split(" → ")[0] for ln in lines] == ["🔧 sales_by_region(quarter='Q3')",
                                                    "🔧 top_products(region='North')"]
    assert lines[0].split(" → ")[1].startswith('{"North": 120, "South": 95} · ')
    assert "<details" in cap.outputs[0].data["text/html"]
    footer = shown(cap)[-1]
    assert "2 tool calls in 3 steps" in footer
    assert ("(tools emulated by prompt)" in footer) == (protocol == "seed")
    ex = g.exchange
    assert ex["steps"] == 3 and [c["status"] for c in ex["calls"]] == ["ok", "ok"]
    roles = [m["role"] for m in ex["messages"]]
    assert roles[-6:] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert sandbox.wait_idle()["requests"] == 3
    assert g.usage.prompt_tokens > 0 and g.usage.completion_tokens > 0


def test_python_api_runs_tools_silently():
    import nb_model
    g = nb_model.generate("How did sales go in Q2?", tools=[sales_by_region], profile=None)
    assert g.text == '[sandbox] sales_by_region returned {"North": 100, "South": 80}.'
    assert g.exchange["emulated"] and g.exchange["calls"][0]["arguments"] == {"quarter": "Q2"}
    asked = []
    g = nb_model.generate("How did sales go in Q2?", tools=[sales_by_region], confirm=lambda call: asked.append(call)
                          or False, cache="off")
    assert [c["name"] for c in asked] == ["sales_by_region"] and g.exchange["calls"][0]["status"] == "declined"
    from nb_model.tools import (
        run_tools,  # the package's own entry point runs the same exchange
    )
    g = run_tools("How did sales go in Q2?", [sales_by_region], cache="off")
    assert g.text == '[sandbox] sales_by_region returned {"North": 100, "South": 80}.'


def test_no_tool_mentioned_is_a_plain_answer(shell, sandbox, use_endpoint, tools_ns):
    use_endpoint(sandbox, "openai")
    res, cap = run(shell, "%%generate --tools sales_by_region -o g --max-tokens 20\nTell me about rivers")
    assert res.success and tools_ns == [] and not call_lines(cap)
    assert shell.user_ns["g"].text.startswith("[sandbox]") and "0 tool calls in 1 steps" in shown(cap)[-1]


def test_malformed_call_goes_back_to_the_model_not_a_traceback(shell, sandbox, use_endpoint, tools_ns):
    for protocol in ("openai", "seed"):
        use_endpoint(sandbox, protocol)
        sandbox.inject("tool-malformed")
        res, cap = run(shell, "%%generate --tools sales_by_region -o g\nHow did sales go in Q3?")
        assert res.success and "Traceback" not in cap.stdout + cap.stderr
        calls = shell.user_ns["g"].exchange["calls"]
        assert [c["status"] for c in calls] == ["malformed", "ok"]
        assert "not valid JSON" in calls[0]["error"] and "malformed" in call_lines(cap)[0]
        assert shell.user_ns["g"].text == '[sandbox] sales_by_region returned {"North": 120, "South": 95}.'


def test_tool_error_and_timeout_are_one_line_results(shell, sandbox, use_endpoint):
    use_endpoint(sandbox, "openai")

    def sales_by_region(quarter: str) -> dict:
        """Sales per region."""
        raise ValueError(f"no data for {quarter}\nsecond line")

    def slow_region_report(region: str) -> str:
        """A report of a region."""
        time.sleep(5)
        return "late"
    shell.user_ns.update(sales_by_region=sales_by_region, slow_region_report=slow_region_report)
    t = time.perf_counter()
    res, cap = run(shell, "%%generate --tools sales_by_region,slow_region_report --tool-timeout 0.3 -o g\n"
                          "Sales per region in Q3?")
    assert res.success and time.perf_counter() - t < 3
    calls = shell.user_ns["g"].exchange["calls"]
    assert [c["status"] for c in calls] == ["error", "timeout"]
    assert calls[0]["error"] == "ValueError: no data for Q3 second line"
    assert "longer than 0.3 s" in calls[1]["error"]
    lines = call_lines(cap)
    assert lines[0].startswith("✗ sales_by_region(quarter='Q3') → error: ValueError") and lines[1].startswith("⏱")
    assert "sales_by_region failed: ValueError" in shell.user_ns["g"].text
    assert run(shell, "1 + 1")[0].result == 2


def test_confirm_declined_runs_nothing(shell, sandbox, use_endpoint, tools_ns, monkeypatch):
    use_endpoint(sandbox, "openai")
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    res, cap = run(shell, "%%generate --tools sales_by_region --confirm -o g\nHow did sales go in Q3?")
    assert res.success and tools_ns == []
    assert "run sales_by_region(quarter='Q3')? [y/N]" in cap.stdout
    assert shell.user_ns["g"].exchange["calls"][0]["status"] == "declined"
    assert call_lines(cap)[0].startswith("⊘ sales_by_region(quarter='Q3') → declined")
    assert "failed: the user declined this call" in shell.user_ns["g"].text
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    res, cap = run(shell, "%%generate --tools sales_by_region --confirm --no-cache -o g\nHow did sales go in Q3?")
    assert tools_ns == [("sales_by_region", {"quarter": "Q3"})]


def test_interrupt_mid_loop_keeps_what_was_shown(shell, sandbox, use_endpoint, tools_ns):
    use_endpoint(sandbox, "openai")

    def slow_region_report(region: str) -> str:
        """A report of a region."""
        for _ in range(200):  # work in small steps, as Python code does between its bytecodes
            time.sleep(0.05)
        return "late"
    shell.user_ns["slow_region_report"] = slow_region_report
    res, cap, seconds = run_interrupted(
        shell, "%%generate --tools sales_by_region,slow_region_report -o g\nSales per region in 'Q3'?")
    assert not res.success and seconds < 3
    g = shell.user_ns["g"]
    assert g.finish_reason == "interrupted"
    assert [c["status"] for c in g.exchange["calls"]] == ["ok", "interrupted"]
    assert [ln[:2] for ln in call_lines(cap)] == ["🔧 ", "⏹ "]
    assert "Interrupted" in cap.stdout and "Traceback" not in cap.stdout
    assert run(shell, "3 + 4")[0].result == 7


def test_max_steps_stops_and_says_so(shell, sandbox, use_endpoint, tools_ns):
    use_endpoint(sandbox, "openai")
    res, cap = run(shell, f"%%generate --tools sales_by_region,top_products --max-steps 1 -o g\n{QUESTION}")
    assert res.success and len(tools_ns) == 1
    assert shell.user_ns["g"].finish_reason == "max_steps" and "raise --max-steps" in shown(cap)[-1]


def test_cache_key_includes_tool_results(shell, sandbox, use_endpoint, tools_ns, monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")  # the notebook's cache, in the test's folder
    use_endpoint(sandbox, "openai")
    cell = "%%generate --tools sales_by_region -o g\nHow did sales go in Q3?"
    first = run(shell, cell)[0], shell.user_ns["g"]
    assert first[0].success and not first[1].cached and sandbox.wait_idle()["requests"] == 2
    res, cap = run(shell, cell)
    again = shell.user_ns["g"]
    assert again.cached and again.text == first[1].text and sandbox.wait_idle()["requests"] == 2
    assert len(tools_ns) == 2  # the tool ran again: its result is part of the key
    SALES["Q3"]["North"] = 999
    try:
        res, cap = run(shell, cell)
    finally:
        SALES["Q3"]["North"] = 120
    fresh = shell.user_ns["g"]
    assert not fresh.cached and "999" in fresh.text
    assert sandbox.wait_idle()["requests"] == 3  # the first step replayed, the second asked anew


@pytest.mark.parametrize("setup, line, expect", [
    ("", "--tools nope", "no function named 'nope' in the notebook"),
    ("x = 5", "--tools x", "'x' is an int, not a function"),
    ("from datetime import datetime\ndef when(t: datetime): pass", "--tools when",
     "tool when: parameter t has type datetime, which has no JSON schema"),
    ("def f(q: str): pass", "--tools f --max-steps 0", "--max-steps must be at least 1"),
    ("def f(q: str): pass", "--tools f --tool-timeout 0", "--tool-timeout must be a positive number"),
    ("def f(q: str): pass", '--tools f --compare "temperature=0,1"', "--tools cannot be combined with --compare"),
    ("def f(q: str): pass\ng = f", "--tools f,g", "two tools are named f"),
    ("", "--tools ,", "--tools needs function names"),
])
def test_bad_input_is_one_line_and_nothing_sent(shell, sandbox, use_endpoint, setup, line, expect):
    use_endpoint(sandbox, "openai")
    run(shell, setup)
    res, cap = run(shell, f"%%generate {line}\nhello")
    text = cap.stdout + cap.stderr
    assert not res.success and expect in text and "Traceback" not in text
    assert len([ln for ln in text.splitlines() if ln.strip()]) <= 2
    assert sandbox.stats()["requests"] == 0


# -- a minimal OpenAI-style server: tool_calls deltas split across events and HTTP chunks ---------------

def _event(delta: dict | None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice]}).encode() \
        + b"\n\n"


def _call(index, **fields) -> dict:
    return {"tool_calls": [{"index": index, **fields}]}


# two calls in one turn, interleaved by index; arguments split inside a key, a value and a \u escape
TOOL_TURN = [
    _event({"role": "assistant", "content": None}),
    _event(_call(0, id="call_a", type="function", function={"name": "sales_by_region", "arguments": ""})),
    _event(_call(0, function={"arguments": '{"quar'})),
    _event(_call(1, id="call_b", type="function", function={"name": "top_products", "arguments": '{"reg'})),
    _event(_call(0, function={"arguments": 'ter": "Q'})),
    _event(_call(1, function={"arguments": 'ion": "Nor\\u00'})),
    _event(_call(0, function={"arguments": '3"}'})),
    _event(_call(1, function={"arguments": 'e9", "n": 1}'})),
    _event(None, "tool_calls"),
    b"data: [DONE]\n\n",
]
ANSWER_TURN = [_event({"content": "North "}), _event({"content": "led."}), _event(None, "stop"), b"data: [DONE]\n\n"]


class ToolCallServer(Loopback):
    """POST /v1/chat/completions: the first request gets TOOL_TURN, later ones ANSWER_TURN, written in
    HTTP chunks of 9 bytes (so events, lines and JSON strings are cut anywhere)."""

    def __init__(self):
        self.bodies = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                data = b"".join(TOOL_TURN if len(outer.bodies) == 1 else ANSWER_TURN)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for at in range(0, len(data), 9):
                    piece = data[at:at + 9]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.serve(Handler, "/v1")



def test_split_tool_call_deltas_assembled_and_run_in_order(shell, tools_ns, monkeypatch):
    server = ToolCallServer()
    try:
        monkeypatch.setenv("NB_MODEL_ENDPOINT", server.url)
        monkeypatch.setenv("NB_MODEL_PROTOCOL", "openai")
        res, cap = run(shell, "%%generate --tools sales_by_region,top_products -o g\nQ3 leader and its products?")
    finally:
        server.stop()
    assert res.success, cap.stderr
    # parallel calls of one turn run one after another, in the order given; "Noré" is not a region
    assert tools_ns == [("sales_by_region", {"quarter": "Q3"})]
    calls = shell.user_ns["g"].exchange["calls"]
    assert [(c["id"], c["name"], c["status"]) for c in calls] == [("call_a", "sales_by_region", "ok"),
                                                                  ("call_b", "top_products", "malformed")]
    assert calls[1]["arguments"] == {"region": "Noré", "n": 1}
    assert "region must be one of 'North', 'South', got 'Noré'" in calls[1]["error"]
    first, second = server.bodies
    assert first["tools"][0] == {"type": "function", "function": {
        "name": "sales_by_region", "description": "Total sales per region for a quarter like 'Q3'.",
        "parameters": {"type": "object", "properties": {"quarter": {"type": "string"}}, "required": ["quarter"]}}}
    assert first["stream"] is True and "tool_choice" not in first
    assistant, result_a, result_b = second["messages"][-3:]
    assert assistant["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "sales_by_region", "arguments": '{"quarter": "Q3"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "top_products",
                                                          "arguments": '{"region": "Nor\\u00e9", "n": 1}'}}]
    assert result_a == {"role": "tool", "tool_call_id": "call_a", "content": '{"North": 120, "South": 95}'}
    assert result_b["tool_call_id"] == "call_b" and "malformed call" in json.loads(result_b["content"])["error"]
    assert shell.user_ns["g"].text == "North led." and "North led." in cap.stdout


# -- the relay ------------------------------------------------------------------------------------

def test_relay_forwards_a_tool_exchange(tmp_path, monkeypatch):
    from helpers.relay import KEY_ENV, JupyterServer, use_relay

    from nb_model.client import Client
    from nb_model.config import resolve_profile
    from nb_model.sandbox import SandboxServer
    from nb_model.tools.loop import run_tools

    with SandboxServer(port=0, qps=0, api_key="sk-upstream-" + "t" * 28) as upstream:
        monkeypatch.setenv(KEY_ENV, "sk-upstream-" + "t" * 28)
        server = JupyterServer(tmp_path, {"quota_db": str(tmp_path / "q.sqlite"), "qps": 0, "profiles": {
            "chat": {"endpoint": upstream.url + "/v1", "protocol": "openai", "model": "up-1", "key_env": KEY_ENV}}})
        server.start()
        try:
            use_relay(monkeypatch, server)
            client = Client(resolve_profile("relay:chat"))
            g = run_tools(client, QUESTION, [sales_by_region, top_products])
        finally:
            server.stop()
        assert [c["status"] for c in g.exchange["calls"]] == ["ok", "ok"]
        assert g.text.endswith('top_products returned ["tea", "cake"].')
        assert upstream.wait_idle()["by_status"] == {"200": 3}


def test_relay_meter_counts_tool_calls_and_schemas():
    from nb_model.server.metering import UsageMeter
    request = json.dumps({"messages": [{"role": "user", "content": "Q3?"}], "tools": [
        {"type": "function", "function": as_wire_schema()}]}).encode()
    bare = UsageMeter("openai", json.dumps({"messages": [{"role": "user", "content": "Q3?"}]}).encode())
    meter = UsageMeter("openai", request)
    for m in (bare, meter):
        m.start("text/event-stream")
        for event in TOOL_TURN:
            m.feed(event)
    assert bare.tokens() > 1 + 2  # the calls' names and arguments count, though the reply has no text
    assert meter.tokens() > bare.tokens() + 10  # the schemas count as prompt


def as_wire_schema() -> dict:
    from nb_model.tools import as_tool
    return as_tool(top_products).schema


def test_deltas_without_index_and_arguments_as_objects():
    """Servers that omit `index` (a new id opens a new call) or send arguments as an object."""
    from nb_model.protocols import adapter
    decoder = adapter("openai").stream_decoder()
    events = [_event({"tool_calls": [{"id": "c1", "function": {"name": "a", "arguments": '{"x":'}}]}),
              _event({"tool_calls": [{"function": {"arguments": " 1}"}}]}),
              _event({"tool_calls": [{"id": "c2", "function": {"name": "b", "arguments": {"y": "é"}}}]}),
              _event(None, "tool_calls")]
    from nb_model.protocols.tools import ToolCallAssembler
    calls = ToolCallAssembler()
    for chunk in decoder.feed(b"".join(events)):
        if chunk.tool_calls:
            calls.feed(chunk.tool_calls)
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls.calls()] == \
        [("c1", "a", {"x": 1}), ("c2", "b", {"y": "é"})]


def test_arguments_arrive_as_the_declared_python_types():
    if Window is None:
        pytest.skip("pydantic is not installed")
    from nb_model.tools import toolset
    from nb_model.tools.loop import View, _Exchange
    seen = {}

    def plan(window: Window, pair: tuple[str, int], count: int, note: Optional[str] = None) -> str:
        """Plans."""
        seen.update(window=window, pair=pair, count=count, note=note)
        return "ok"
    ex = _Exchange(toolset([plan]), emulated=False)
    record = {"id": "c", "name": "plan",
              "raw_arguments": json.dumps({"window": {"start": 1, "end": 2}, "pair": ["a", 1], "count": 3.0})}
    ex.run(record, confirm=False, timeout=None, view=View())
    assert record["status"] == "ok" and record["result"] == "ok"
    assert seen["window"] == Window(start=1, end=2) and seen["pair"] == ("a", 1)
    assert seen["count"] == 3 and type(seen["count"]) is int and seen["note"] is None
    bad = {"id": "d", "name": "plan", "raw_arguments": '{"window": {}, "pair": ["a", 1], "count": 1.5}'}
    ex.run(bad, confirm=False, timeout=None, view=View())
    assert bad["status"] == "malformed" and bad["error"] == "malformed call: count must be integer, got float 1.5"
