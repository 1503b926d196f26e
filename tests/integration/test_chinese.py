"""Chinese as a first-class language: the context check counts it per character, tables align by display
width, and a content-filtered answer is never a cache hit. Real magic, real sandbox over HTTP."""
import pytest

from conftest import requests_seen, run, shown
from nb_model import textwidth
from nb_model.tokens import estimate_tokens


def test_40k_chinese_characters_refused_before_sending(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)  # a 16K-token profile
    shell.user_ns["doc"] = "这是一段很长的中文文本。" * 3334  # 40,008 characters
    res, cap = run(shell, "%%generate --max-tokens 100\n总结：{doc}")
    out = cap.stdout + cap.stderr
    assert not res.success and "Traceback" not in out
    lines = [ln for ln in out.splitlines() if "context window" in ln]
    assert len(lines) == 1 and "16384-token context window" in lines[0] and "split" in lines[0]
    assert sandbox.stats()["requests"] == 0


def test_estimate_counts_each_ideograph():
    assert estimate_tokens("量" * 20000) > 16384  # about 0.85 each: over a 16K window
    assert estimate_tokens("这是一段很长的中文文本。" * 3334) > 40000 * 0.8
    assert estimate_tokens("灯塔") == 2 and estimate_tokens("Lighthouses guide ships") == 5


def test_history_columns_align_by_display_width(shell, sandbox, use_endpoint, monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox)
    run(shell, "%%generate --max-tokens 20 --language zh\n请用一句话向小学生介绍灯塔的历史")
    run(shell, "%%generate --max-tokens 20\nDescribe a lighthouse")
    _, cap = run(shell, "%generate history")
    lines = cap.stdout.rstrip("\n").splitlines()
    assert len(lines) == 3 and "灯塔" in cap.stdout
    # the answer column starts at the same display column on every line
    starts = []
    for line in lines:
        head = line[:line.index("[sandbox]")] if "[sandbox]" in line else line[:line.index("answer")]
        starts.append(textwidth.width(head))
    assert len(set(starts)) == 1, lines


def test_display_width():
    assert textwidth.width("abc") == 3 and textwidth.width("灯塔") == 4 and textwidth.width("é") == 1
    assert textwidth.ljust("灯塔", 6) == "灯塔  "
    assert textwidth.shorten("灯塔在夜里为船只指路", 7) == "灯塔在…" and textwidth.width("灯塔在…") == 7


@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_content_filtered_answer_is_not_cached(shell, sandbox, use_endpoint, monkeypatch, protocol):
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox, protocol=protocol)
    cell = "%%generate --max-tokens 40\ntell me about volcanoes"
    sandbox.inject("filter")
    res, cap = run(shell, cell)
    footer = "\n".join(shown(cap))
    assert res.success and "content filter" in footer and "rephrase the prompt" in footer
    res, again = run(shell, cell)  # asks again: now the whole answer, which is cached
    assert requests_seen(sandbox, 2) == 2 and "content filter" not in "\n".join(shown(again))
    run(shell, cell)
    assert "cached" in "\n".join(shown(_last(shell, cell))) and requests_seen(sandbox, 2) == 2


def _last(shell, cell):
    return run(shell, cell)[1]


def test_split_text_keeps_chinese_chunks_within_budget_at_sentence_ends():
    from nb_model import split_text
    text = "灯塔看守人每天傍晚都会爬上螺旋楼梯。他修剪灯芯，把巨大的透镜擦得闪亮！" * 40  # no spaces at all
    chunks = split_text(text, max_tokens=100, overlap=0)
    assert len(chunks) > 5 and "".join(chunks) == text
    assert all(estimate_tokens(c) <= 100 for c in chunks)
    assert all(c[-1] in "。！" for c in chunks)  # cut after a sentence, not mid-word
