"""Notebook rendering in a real kernel: preview, footer, formats, display widths, the comm."""

import json
from itertools import pairwise

import pytest
from nb_model import textwidth
from nb_model.display import PREVIEW_INTERVAL
from nb_model.display.frontend import MIME

from conftest import run, shown
from helpers.kernel import kernel  # noqa: F401 (fixtures)
from helpers.kernel import replay, run_cell


def visible(outputs: list[dict]) -> list[dict]:
    """Outputs that show something, without the once-per-kernel 'nb_model: …' notice."""
    return [o for o in outputs if o and not str(o.get("text/plain", "")).startswith("nb_model:")]


def printed(kc, code: str) -> str:
    return "".join(m["content"]["text"] for m in run_cell(kc, code) if m["msg_type"] == "stream")


def test_preview_updates_steadily_and_leaves_only_render_and_footer(kernel):
    run_cell(kernel, "embedded_sandbox().token_rate = 100")
    msgs = run_cell(kernel, "%%generate --max-tokens 500 -f markdown -o g\nwrite a long essay about rivers")
    text = printed(kernel, "print(g.text, end='')")
    assert len(text) > 2000
    # every message that changes what is visible, up to and including the final render
    shows = [m for m in msgs if m["msg_type"] in ("display_data", "update_display_data") and m["content"]["data"]
             and m["content"]["data"].get(MIME, {}).get("kind") == "answer"]
    end = next(i for i, m in enumerate(shows) if m["content"]["data"][MIME]["state"] == "done")
    times = [m["header"]["date"].timestamp() for m in shows[:end + 1]]
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) >= 8 and max(gaps) <= PREVIEW_INTERVAL + 0.5, [round(g, 2) for g in gaps]
    # the preview really showed the text as it grew, in order, as markdown (rendered as it comes)
    assert all(m["content"]["data"][MIME] == {"kind": "answer", "format": "markdown", "state": "streaming"}
               for m in shows[:end])
    previews = [m["content"]["data"]["text/markdown"] for m in shows[:end]]
    assert text.startswith(previews[0]) and sum(len(p) for p in previews) < 4 * len(text)

    saved, recorded = replay(msgs)
    for outputs in (saved, recorded):
        kept = visible(outputs)
        assert len(kept) == 2, kept
        assert kept[0] == {MIME: {"kind": "answer", "format": "markdown", "state": "done"}, "text/markdown": text}
        assert kept[1]["text/plain"].startswith("— sandbox · ") and kept[1][MIME]["kind"] == "footer"
    rest = [o for o in saved if o not in visible(saved) and not o.get("text/plain", "").startswith("nb_model:")]
    assert len(rest) >= 6 and all(o == {} for o in rest)  # the "generating…" line and the preview slices, emptied


def test_markdown_stream_bytes_stay_within_4x_of_the_text(kernel):
    run_cell(kernel, "embedded_sandbox().token_rate = 600")
    msgs = run_cell(kernel, "%%generate --max-tokens 1500 -f markdown -o g\nwrite a long essay about rivers")
    size = int(printed(kernel, "print(len(g.text.encode()))"))
    sent = sum(len(json.dumps(m["content"])) for m in msgs
               if m["msg_type"] in ("stream", "display_data", "update_display_data"))
    assert sent <= 4 * size, (sent, size)


def test_replay_leaves_the_same_outputs_as_the_live_run(kernel):
    """A cache hit arrives in one piece: it shows the same number of (empty) slices and the same render."""
    run_cell(kernel, "embedded_sandbox().token_rate = 400\n%generate cache --file cache.sqlite")
    cell = "%%generate --max-tokens 300 -f markdown\nwrite a long essay about lakes"
    live, hit = replay(run_cell(kernel, cell))[0], replay(run_cell(kernel, cell))[0]
    assert len(live) == len(hit) and visible(live)[0] == visible(hit)[0]
    assert live.count({}) == hit.count({}) >= 3


def test_generating_line_shows_until_the_first_text_and_leaves_nothing(kernel):
    run_cell(kernel, "embedded_sandbox().token_rate = 200")
    msgs = run_cell(kernel, "%%generate --max-tokens 30\nwrite about wells")
    waiting = next(m for m in msgs if m["msg_type"] == "update_display_data"
                   and m["content"]["data"].get(MIME) == {"kind": "waiting"})
    assert waiting["content"]["data"]["text/plain"] == "generating…"
    display_id = waiting["content"]["transient"]["display_id"]
    order = [m for m in msgs if m["msg_type"] == "stream"
             or m["content"].get("transient", {}).get("display_id") == display_id]
    assert order[0]["msg_type"] == "display_data" and order[0]["content"]["data"] == {}  # nbval records {}
    assert order[1] is waiting and order[2]["content"]["data"] == {}  # cleared ...
    assert order[3]["msg_type"] == "stream"  # ... before the first text
    saved, recorded = replay(msgs)
    assert "generating…" not in json.dumps(saved) + json.dumps(recorded)


def test_json_that_is_not_json_says_so(kernel):
    run_cell(kernel, "embedded_sandbox().token_rate = 0")
    kept = visible(replay(run_cell(kernel, "%%generate --max-tokens 20 -f json\nwrite a poem about ice"))[0])
    assert kept[0]["text/plain"] == "⚠ -f json: the answer is not JSON; shown as text"
    assert kept[1][MIME] == {"kind": "answer", "format": "json", "state": "done"} and "application/json" not in kept[1]


def test_footer_html_uses_theme_colours_and_keeps_dollars_from_maths(kernel):
    run_cell(kernel, "embedded_sandbox().token_rate = 0")
    footer = visible(replay(run_cell(kernel, "%%generate --max-tokens 20\nwrite about coins"))[0])[-1]
    assert 'class="tex2jax_ignore mathjax_ignore"' in footer["text/html"]
    assert "var(--jp-ui-font-color2" in footer["text/html"] and "#777" not in footer["text/html"]
    payload = footer[MIME]
    assert payload["kind"] == "footer" and payload["completion_tokens"] > 0 and payload["cached"] is False


@pytest.mark.parametrize("frontend, seen", [("closes it unanswered (no extension)", "['missing']"),
                                            ("answers, then closes it", "['done']")])
def test_insert_cell_request_over_the_comm(kernel, frontend, seen):
    """The kernel side of the panel's To cell: what a frontend receives, and what each reply leads to."""
    msgs = run_cell(kernel, "from nb_model.display.frontend import insert_cell\nseen = []\n"
                            "c = insert_cell('%%generate\\nhi', on_done=lambda: seen.append('done'), "
                            "on_missing=lambda: seen.append('missing'))")
    opened = next(m for m in msgs if m["msg_type"] == "comm_open")["content"]
    assert opened["target_name"] == "nb_model"
    assert opened["data"] == {"action": "insert-cell", "text": "%%generate\nhi", "cell_type": "code"}
    if frontend.startswith("answers"):  # what the extension does
        kernel.shell_channel.send(kernel.session.msg("comm_msg", {"comm_id": opened["comm_id"],
                                                                  "data": {"inserted": True, "index": 3}}))
    kernel.shell_channel.send(kernel.session.msg("comm_close", {"comm_id": opened["comm_id"], "data": {}}))
    assert printed(kernel, "print(seen)") == seen + "\n"


def test_formats_render(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    for fmt in ("text", "markdown", "code", "json", "html"):
        res, cap = run(shell, f"%%generate -f {fmt} --max-tokens 12 -o g\nformat test")
        assert res.success and shell.user_ns["g"].text


def test_truncation_line_without_an_explicit_max_tokens(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    res, cap = run(shell, "%%generate\nwrite a long essay")
    footer = shown(cap)[-1]
    assert "truncated at the server's default length" in footer and "None" not in footer


def test_display_width():
    assert textwidth.width("abc") == 3 and textwidth.width("灯塔") == 4 and textwidth.width("é") == 1
    assert textwidth.ljust("灯塔", 6) == "灯塔  "
    assert textwidth.shorten("灯塔在夜里为船只指路", 7) == "灯塔在…" and textwidth.width("灯塔在…") == 7
