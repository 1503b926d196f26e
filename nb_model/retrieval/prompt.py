"""The grounded prompt (numbered passages + question) within a context window, and which passages an answer
cites (`display.citations` shows them).

The prompt is plain text, so it works the same on every protocol (the seed API's `prompt`, an OpenAI
user message or completion prompt); it becomes the request's prompt, so the cache key holds the
passages and a changed document gets a fresh answer::

    Answer the question using only the numbered passages below. Cite the passages you use by their
    numbers in square brackets, like [1]. If the passages do not contain the answer, say so.

    Passages:
    [1] (contract.md, lines 3-7)
    …

    Question: …
    Answer:
"""
from __future__ import annotations

import re

from ..errors import ConfigError
from ..tokens import estimate_tokens
from .index import Passage

INSTRUCTION = ("Answer the question using only the numbered passages below. Cite the passages you use by "
               "their numbers in square brackets, like [1]. If the passages do not contain the answer, say so.")
DEFAULT_REPLY_TOKENS = 512  # reserved for the answer when max_tokens is not set
MARGIN = 32  # tokens kept free for the protocol's wrapping (role names, "Assistant:")
_CITE = re.compile(r"\[(\d{1,3})\]")


def _header(n: int, p: Passage) -> str:
    return f"[{n}] ({p.where})"


def build_prompt(question: str, passages: list[Passage], *, window: int, max_tokens: int | None = None,
                 system: str | None = None, history: list[dict] | None = None) -> tuple[str, list[Passage]]:
    """(prompt, the passages it holds): passages in rank order while the whole request fits `window`
    (the question, the system text, earlier turns of a chat (`history`), this instruction and
    `max_tokens` for the reply all count)."""
    question = question.strip()
    reply = max_tokens or min(DEFAULT_REPLY_TOKENS, window // 4)
    tail = f"\n\nQuestion: {question}\nAnswer:"
    fixed = estimate_tokens(INSTRUCTION + "\n\nPassages:\n" + tail) + estimate_tokens(system or "") + MARGIN
    earlier = sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in history or [])
    budget = window - reply - fixed - earlier
    if budget <= 0:
        what = "the chat's earlier turns, the question" if history else "the question"
        raise ConfigError(f"{what} and max_tokens={reply} leave no room for passages in the "
                          f"{window}-token context window: lower max_tokens or shorten the question"
                          + (", or reset the chat" if history else ""))
    kept: list[Passage] = []
    blocks: list[str] = []
    for p in passages:
        block = f"{_header(len(kept) + 1, p)}\n{p.text}"
        cost = estimate_tokens(block)  # blank lines between blocks are free for the estimator
        if cost > budget:
            break
        budget -= cost
        kept.append(p)
        blocks.append(block)
    body = "\n\n".join(blocks) if blocks else "(no passage matches the question)"
    return f"{INSTRUCTION}\n\nPassages:\n{body}{tail}", kept


def cited(answer: str, count: int) -> tuple[list[int], list[int]]:
    """(numbers cited that exist among `count` passages, in first-cited order; numbers cited that do not)."""
    good, bad = [], []
    for m in _CITE.finditer(answer):
        n = int(m.group(1))
        target = good if 1 <= n <= count else bad
        if n not in target:
            target.append(n)
    return good, bad
