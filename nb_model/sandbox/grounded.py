"""The simulated model's answer to a grounded prompt (numbered passages, then a question).

A prompt is grounded when it holds a ``Passages:`` section of ``[n] (source)`` blocks followed by
``Question: …`` (the layout `nb_model.retrieval` sends; any client may send it). The answer is
deterministic: it quotes, from the passage(s) sharing the most question words, the sentence sharing the
most, and cites their numbers — so tests can check that every citation points at a passage that was sent
and holds the quoted words. When no passage shares at least a third of the question's words the answer
says the passages do not contain it. Chinese questions (any CJK character) get a Chinese answer;
words are Latin words of 3+ letters and CJK character bigrams, minus a few question words ("what", "什么").
"""
from __future__ import annotations

import math
import re

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"([{_CJK}]+)|([^\W\d_]{{3,}}|\d+)")
_BLOCK = re.compile(r"^\[(\d{1,3})\] \((.*?)\)\n(.*?)(?=\n\n\[\d{1,3}\] \(|\Z)", re.M | re.S)
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s*|\n+")
_STOP = frozenset("the and are was were what which who whom whose why how does did has have had for from with "
                  "that this these those there their they them into about when where than then also can "
                  "could would should will shall may might must not any all our your you its".split())
_STOP_ZH = frozenset("什么 么时 时候 多少 怎么 为什 么不 哪些 如何 是否 可以 需要 多久 多长".split())
MAX_QUOTED = 2


def words(text: str) -> set[str]:
    out: set[str] = set()
    for cjk, latin in _WORD.findall(text):
        if cjk:
            out.update(b for i in range(max(len(cjk) - 1, 1)) if (b := cjk[i:i + 2]) not in _STOP_ZH)
        elif latin.lower() not in _STOP:
            w = latin.lower()
            out.add(w[:-1] if len(w) > 4 and w.endswith("s") and w[-2] not in "su" else w)
    return out


def parse(prompt: str) -> tuple[str, list[tuple[int, str, str]]] | None:
    """(question, [(number, source, text)]) of a grounded prompt, else None."""
    start = prompt.find("Passages:\n")
    end = prompt.rfind("\n\nQuestion: ")
    if start < 0 or end < start:
        return None
    question = prompt[end + len("\n\nQuestion: "):]
    question = question.split("\nAnswer:", 1)[0].strip()
    section = prompt[start + len("Passages:\n"):end]
    blocks = [(int(n), src, body.strip()) for n, src, body in _BLOCK.findall(section)]
    return question, blocks


def answer(prompt: str) -> str | None:
    """The grounded answer to `prompt`, or None when it is not a grounded prompt."""
    parsed = parse(prompt)
    if parsed is None:
        return None
    question, blocks = parsed
    zh = bool(re.search(f"[{_CJK}]", question))
    asked = words(question)
    scored = sorted(((len(asked & words(body)), n, body) for n, _, body in blocks), key=lambda s: (-s[0], s[1]))
    need = max(1, math.ceil(len(asked) / 3))
    if not scored or scored[0][0] < need:
        return ("[sandbox] 这些段落中没有这个问题的答案。" if zh
                else "[sandbox] The passages do not contain the answer to this question.")
    best = scored[0][0]
    parts = []
    for hits, n, body in scored[:MAX_QUOTED]:
        if hits < best:
            break
        sentences = [s.strip() for s in _SENTENCE.split(body) if s and s.strip()] or [body]
        quote = max(sentences, key=lambda s: len(asked & words(s)))  # first of the best: max keeps the first
        if zh:
            parts.append(f"根据 [{n}]：“{quote}”" if not parts else f"另见 [{n}]：“{quote}”")
        else:
            parts.append(f'According to [{n}]: "{quote}"' if not parts else f'See also [{n}]: "{quote}"')
    return "[sandbox] " + ("\n".join(parts))
