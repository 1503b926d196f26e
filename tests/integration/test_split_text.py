"""split_text and summarize_long: chunks within budget at sentence ends, for every language."""

import pytest
from hypothesis import given, settings, strategies as st
from nb_model.batch import split_spans, split_text, summarize_long
from nb_model.errors import ConfigError
from nb_model.tokens import estimate_tokens

from conftest import settled


def test_split_text_keeps_chinese_chunks_within_budget_at_sentence_ends():
    from nb_model import split_text
    text = "灯塔看守人每天傍晚都会爬上螺旋楼梯。他修剪灯芯，把巨大的透镜擦得闪亮！" * 40  # no spaces at all
    chunks = split_text(text, max_tokens=100, overlap=0)
    assert len(chunks) > 5 and "".join(chunks) == text
    assert all(estimate_tokens(c) <= 100 for c in chunks)
    assert all(c[-1] in "。！" for c in chunks)  # cut after a sentence, not mid-word


# -- split_text ----------------------------------------------------------------------------
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=12)


SENTENCE = st.lists(WORD, min_size=1, max_size=12).map(lambda ws: " ".join(ws) + ".")


PARAGRAPHS = st.lists(st.lists(SENTENCE, min_size=1, max_size=6), min_size=1, max_size=8)


def check_spans(text, max_tokens, overlap):
    spans = split_spans(text, max_tokens, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)  # the whole text is covered...
    for (a1, b1), (a2, b2) in zip(spans, spans[1:]):
        assert a1 < a2 <= b1 < b2  # ...in order, without gaps, each chunk adding new text
    for a, b in spans:
        assert estimate_tokens(text[a:b]) <= max_tokens
    assert split_text(text, max_tokens, overlap) == [c for c in (text[a:b].strip() for a, b in spans) if c]
    return spans


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=600), max_tokens=st.integers(1, 60), data=st.data())
def test_split_covers_any_text_within_budget(text, max_tokens, data):
    check_spans(text, max_tokens, data.draw(st.integers(0, max_tokens - 1)))


@settings(max_examples=60, deadline=None)
@given(paragraphs=PARAGRAPHS, extra=st.integers(0, 60), data=st.data())
def test_split_prose_cuts_at_sentence_or_paragraph_boundaries(paragraphs, extra, data):
    text = "\n\n".join(" ".join(p) for p in paragraphs)
    max_tokens = max(estimate_tokens(s + "\n\n") for p in paragraphs for s in p) + extra
    spans = check_spans(text, max_tokens, data.draw(st.integers(0, max_tokens // 2)))
    for a, _ in spans[1:]:  # every sentence fits the budget, so no chunk starts mid-sentence
        assert text[:a].rstrip().endswith(".") and text[a - 1].isspace()


def test_split_overlaps_and_refuses_bad_budgets():
    text = "\n\n".join(f"Paragraph {p}. " + " ".join(f"Sentence {p}.{s} has five words." for s in range(8))
                       for p in range(6))
    spans = split_spans(text, 60, 15)
    assert len(spans) > 3 and all(a2 < b1 for (_, b1), (a2, _) in zip(spans, spans[1:]))  # they overlap
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(split_spans(text, 60, 0), split_spans(text, 60, 0)[1:]))
    for bad in ({"max_tokens": 0}, {"overlap": 60}, {"overlap": -1}):
        with pytest.raises(ConfigError):
            split_text(text, **{"max_tokens": 60, **bad})
    assert split_text("   \n\n  ", 10) == []
    for bad in (None, 123, b"bytes", ["a list"]):
        with pytest.raises(ConfigError, match="split_text needs the text as a string"):
            split_text(bad)
        with pytest.raises(ConfigError, match="summarize_long needs the text as a string"):
            summarize_long(bad, progress=False)


def test_summarize_long_maps_then_reduces(sandbox, use_endpoint):
    use_endpoint(sandbox)
    text = "\n\n".join(" ".join(f"The delta {p} carries silt number {s} to the sea." for s in range(12))
                       for p in range(20))
    chunks = split_text(text, 400, 40)
    final = summarize_long(text, chunk_tokens=400, overlap=40, max_tokens=20, progress=False)  # one reduce
    stats = settled(sandbox, len(chunks) + 1)
    assert final.text.startswith("[sandbox]") and final.finish_reason in ("length", "stop")
    assert stats["requests"] == len(chunks) + 1 and stats["by_status"] == {"200": len(chunks) + 1}
    assert final.usage.completion_tokens == stats["tokens_out"]  # usage adds up every call
    sandbox.reset()
    short = summarize_long("A short note about owls.", max_tokens=20, progress=False)
    assert short.text and settled(sandbox, 1)["requests"] == 1
