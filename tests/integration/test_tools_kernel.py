"""Tool calls in a real kernel (jupyter_client): the line shown while a call runs, what a saved notebook and
nbval's recording hold afterwards, and confirm answered on the kernel's stdin while the cell runs."""
import time

import pytest
from helpers.kernel import replay, started_kernel

SALES = ("import time\n"
         "def sales_by_region(quarter: str) -> dict:\n"
         "    '''Total sales per region for a quarter like 'Q3'.'''\n"
         "    time.sleep(0.3)\n"
         "    return {'North': 120, 'South': 95}\n")
CELL = "%%generate --tools sales_by_region --no-cache -o g\nWhich region sold most in Q3?"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with started_kernel(tmp_path_factory.mktemp("kernel"), "%load_ext nb_model\n" + SALES) as kc:
        yield kc


def run_cell(kc, code: str, timeout: float = 120) -> list[dict]:
    msgs = []
    reply = kc.execute_interactive(code, output_hook=msgs.append, timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
    return msgs


def test_a_running_call_shows_a_line_that_gives_way_to_its_result(kernel):
    msgs = run_cell(kernel, CELL)
    shows = [(m["msg_type"], m["content"]["data"].get("text/plain", "")) for m in msgs
             if m["msg_type"] in ("display_data", "update_display_data")]
    running = ("update_display_data", "⏳ calling sales_by_region(quarter='Q3')…")
    assert running in shows, shows
    done = next(i for i, (_, text) in enumerate(shows) if text.startswith("🔧 sales_by_region(quarter='Q3') → "))
    assert shows.index(running) < done and shows[done - 1] == ("update_display_data", "")  # taken back first
    saved, recorded = replay(msgs)
    assert saved == recorded  # nbval finds what the saved notebook holds
    assert not any("calling" in str(o) for o in saved)


@pytest.mark.parametrize("answer, runs", [("n", False), ("y", True)])
def test_confirm_asks_on_the_kernels_stdin(kernel, answer, runs):
    """--confirm asks with input(): in Jupyter that is the frontend's input box (an input_request on the
    stdin channel), answered while the cell runs."""
    asked = []

    def reply(msg):
        asked.append(msg["content"]["prompt"])
        kernel.input(answer)

    msgs = []
    reply_msg = kernel.execute_interactive(CELL.replace("--no-cache", "--no-cache --confirm"), allow_stdin=True,
                                           stdin_hook=reply, output_hook=msgs.append, timeout=60)
    assert reply_msg["content"]["status"] == "ok", reply_msg["content"]
    assert asked == ["run sales_by_region(quarter='Q3')? [y/N] "]
    lines = [m["content"]["data"].get("text/plain", "") for m in msgs if m["msg_type"] == "display_data"]
    mark = "🔧" if runs else "⊘"
    assert any(ln.startswith(f"{mark} sales_by_region(quarter='Q3') → ") for ln in lines), lines


SLOW = ("def slow_report(quarter: str) -> str:\n"
        "    '''A slow report for a quarter like 'Q3'.'''\n"
        "    time.sleep(30)\n"
        "    return 'done'\n")


def test_interrupt_while_a_call_runs_keeps_what_was_shown(kernel):
    """The kernel's interrupt (the stop button) during a slow tool: the loop stops, the call is shown as
    interrupted, the 'calling…' line is taken back, the kernel stays usable and `-o g` holds the exchange."""
    run_cell(kernel, SLOW)
    msgs, interrupted = [], []

    def watch(msg):
        msgs.append(msg)
        data = msg["content"].get("data", {})
        if msg["msg_type"] == "update_display_data" and data.get("text/plain", "").startswith("⏳ calling"):
            time.sleep(0.3)
            kernel.manager.interrupt_kernel()
            interrupted.append(time.monotonic())

    start = time.monotonic()
    reply = kernel.execute_interactive("%%generate --tools slow_report --no-cache -o g\nGive the slow report for Q3.",
                                       output_hook=watch, timeout=60)
    assert interrupted and time.monotonic() - start < 20
    assert reply["content"]["status"] == "error"
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert errors and "stopped by user after 1 tool call(s)" in errors[0]["evalue"], errors
    saved, recorded = replay(msgs)
    assert saved == recorded and not any("calling" in str(o) for o in saved)
    lines = [o.get("text/plain", "") for o in saved]
    assert any(ln.startswith("⏹ slow_report(quarter='Q3') → interrupted") for ln in lines), lines
    out = [m["content"]["text"] for m in run_cell(kernel, "print(g.exchange['calls'][0]['status'])")
           if m["msg_type"] == "stream"]
    assert out == ["interrupted\n"]
