"""Words for BM25 in every language, and chunking on paragraph/sentence boundaries.

Chinese (and Japanese/Korean) text has no spaces, so BM25 needs a segmenter. We use **overlapping
character bigrams** of each CJK run (a run of one character stays a unigram) rather than a dictionary
segmenter such as jieba: on the project's test corpus (`tests/data/rag/`, printed by
`bench/bench_retrieval.py` side by side) both reach recall@5 1.00 for Chinese questions, and at
recall@1 bigrams reach 1.00 where jieba reaches 0.87 (its words split some question terms differently
from the passage's); bigrams also need no
dictionary (jieba loads a 20 MB dictionary, about a second on first use) and work for any CJK text,
including names and terms a dictionary does not know. Latin words are lower-cased, stop words dropped,
and a trailing plural "s" removed, so "notebooks" finds "notebook".
"""
from __future__ import annotations

import re

from ..tokens import estimate_tokens

_CJK = (r"\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
        r"\U00020000-\U0003134f")
_WORDS = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_]+)")
_CJK_CHAR = re.compile(rf"[{_CJK}]")

STOPWORDS = frozenset("""
a an and are as at be been but by can could did do does for from had has have how i if in into is it its
me my no not of on or our so than that the their them then there these they this those to was we were what
when where which who whom why will with would you your about after all also any before between both each
few more most other over same should some such through under until up very
""".split())


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("s") and word[-2] not in "su":
        return word[:-1]
    return word


def words(text: str, *, bigrams: bool = True) -> list[str]:
    """The BM25 terms of `text`: Latin words (lower-cased, stop words dropped, crude singular) and CJK
    character bigrams (`bigrams=False`: single characters)."""
    out: list[str] = []
    for m in _WORDS.finditer(text):
        if m.lastgroup == "cjk":
            run = m.group()
            if not bigrams or len(run) == 1:
                out.extend(run)
            else:
                out.extend(run[i:i + 2] for i in range(len(run) - 1))
        else:
            word = m.group().lower()
            if word not in STOPWORDS:
                out.append(_stem(word))
    return out


def has_cjk(text: str) -> bool:
    return bool(_CJK_CHAR.search(text))


_PARAGRAPHS = re.compile(r"\n[ \t]*\n+")
_SENTENCES = re.compile(r"(?<=[.!?。！？；;])\s*")


SHORT = 16  # tokens: a paragraph shorter than this (a heading, a lone line) is joined to the next one


def chunks(text: str, budget: int = 200) -> list[tuple[str, int, int]]:
    """(chunk, first line, last line) passages of `text`: one per paragraph; a paragraph over `budget`
    tokens (the shared estimator) is cut at sentence ends (a sentence over budget, by characters), and a
    paragraph under SHORT tokens (a heading) is joined to the next one."""
    out: list[tuple[str, int, int]] = []
    pieces: list[tuple[str, int, int]] = []  # paragraphs (or their sentences) with line ranges
    pos = 0
    for para in _PARAGRAPHS.split(text):
        start = text.find(para, pos)
        pos = start + len(para)
        stripped = para.strip()
        if not stripped:
            continue
        lead = len(para) - len(para.lstrip())
        first = text.count("\n", 0, start + lead) + 1  # the line of the paragraph's first character
        last = first + stripped.count("\n")
        if estimate_tokens(stripped) <= budget:
            pieces.append((stripped, first, last))
            continue
        at = 0
        for sentence in _SENTENCES.split(para):
            s = sentence.strip()
            if not s:
                continue
            at = para.find(s, at)  # lines by position: the split drops the whitespace (and newlines) between
            line = first + stripped.count("\n", 0, max(at - lead, 0))
            at += len(s)
            while estimate_tokens(s) > budget:  # one sentence over budget: cut by characters
                cut = _cut_at_budget(s, budget)
                head, rest = s[:cut], s[cut:]
                pieces.append((head.strip(), line, line + head.rstrip().count("\n")))
                line += head.count("\n") + rest[:len(rest) - len(rest.lstrip())].count("\n")
                s = rest.strip()
            if s:
                pieces.append((s, line, line + s.count("\n")))
    current: list[tuple[str, int, int]] = []
    size = 0
    for piece in pieces:  # a paragraph is a passage; short ones (a heading, a lone line) join the next
        n = estimate_tokens(piece[0])
        if current and (size >= SHORT or size + n > budget):
            out.append(_join(current))
            current, size = [], 0
        current.append(piece)
        size += n
    if current:
        out.append(_join(current))
    return out


def _cut_at_budget(s: str, budget: int) -> int:
    """Where to cut `s` so the head stays within `budget` tokens: after the last whole word that fits
    (the estimate adds up over whitespace-separated words), else inside a long word (a CJK run)."""
    used = 0
    for m in re.finditer(r"\S+\s*", s):
        n = estimate_tokens(m.group())
        if used + n > budget:
            if m.start() > 0:
                return m.start()
            break
        used += n
    lo, hi = 1, len(s)
    while lo < hi:  # one word over budget: the longest prefix within it
        mid = (lo + hi + 1) // 2
        if estimate_tokens(s[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _join(pieces: list[tuple[str, int, int]]) -> tuple[str, int, int]:
    sep = "\n\n"
    return sep.join(p[0] for p in pieces), pieces[0][1], pieces[-1][2]
