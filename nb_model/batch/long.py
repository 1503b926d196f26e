"""Inputs longer than the context window: `split_text` (chunks within a token budget, cut at paragraph,
sentence or word boundaries, CJK included) and `summarize_long` (map, then reduce)."""
from __future__ import annotations

import re

from ..client import client_for
from ..errors import ConfigError, Interrupted
from ..results import Generation, Usage
from ..tokens import estimate_tokens
from .runner import generate_many


def _need_text(text, what: str) -> None:
    """One ConfigError line unless `text` is a string."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} needs the text as a string, got {type(text).__name__}: "
                          "read the file or column into a str first")


_LEVELS = (
    re.compile(r"\n[ \t]*\n\s*"),      # paragraph breaks
    re.compile(r"(?<=[.!?;:…])[\"')\]]*\s+|(?<=[。！？；])[”’」』）]*\s*"),  # sentence ends (CJK: no space after)
    re.compile(r"\s+"),                # spaces
)


def _units(text: str, start: int, end: int, max_tokens: int, level: int = 0):
    """Spans covering text[start:end], each within budget: cut at the coarsest boundary that works."""
    if estimate_tokens(text[start:end]) <= max_tokens:
        yield start, end
        return
    if level == len(_LEVELS):  # one huge word (or a run of CJK text): plain slices within budget
        a = start
        while a < end:
            b = min(a + 4 * max_tokens, end)
            while b - a > 1 and (n := estimate_tokens(text[a:b])) > max_tokens:
                b = a + max(1, (b - a) * max_tokens // n)  # no character counts more than one token
            yield a, b
            a = b
        return
    cuts = [m.end() for m in _LEVELS[level].finditer(text, start, end) if start < m.end() < end]
    for a, b in zip([start] + cuts, cuts + [end]):
        yield from _units(text, a, b, max_tokens, level + 1)


def split_spans(text: str, max_tokens: int = 2000, overlap: int | None = None) -> list[tuple[int, int]]:
    """(start, end) spans of `split_text`'s chunks: in order, covering the text, each within budget."""
    _need_text(text, "split_text")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    overlap = max_tokens // 10 if overlap is None else overlap
    if not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ConfigError(f"overlap must be an integer from 0 to max_tokens - 1, got {overlap!r}")
    units = list(_units(text, 0, len(text), max_tokens))
    sums = [0]  # sums[k]: the estimates of units[:k] added up (units end after whitespace or inside a word,
    for a, b in units:  # so the estimate of units joined is never above the sum of theirs)
        sums.append(sums[-1] + estimate_tokens(text[a:b]))

    def cost(i: int, j: int) -> int:  # estimate of units[i:j] joined, never below the true estimate
        return sums[j] - sums[i]

    spans, i = [], 0
    while i < len(units):
        j = i + 1
        while j < len(units) and cost(i, j + 1) <= max_tokens:
            j += 1
        spans.append((units[i][0], units[j - 1][1]))
        if j == len(units):
            break
        k = j  # the next chunk repeats the last units that fit in `overlap`, and still takes a new one
        while k - 1 > i and cost(k - 1, j) <= overlap and cost(k - 1, j + 1) <= max_tokens:
            k -= 1
        i = k
    return spans


def split_text(text: str, max_tokens: int = 2000, overlap: int | None = None) -> list[str]:
    """Chunks of `text` of at most `max_tokens` (estimated like the client does), cut at
    paragraph breaks, else sentence ends, else spaces; consecutive chunks share up to
    `overlap` tokens of context (default: a tenth of `max_tokens`)."""
    chunks = (text[a:b].strip() for a, b in split_spans(text, max_tokens, overlap))
    return [c for c in chunks if c]


MAP_PROMPT = "{instructions}\n\nPart {n} of {total} of a longer text:\n\n{chunk}"
REDUCE_PROMPT = ("{instructions}\n\nBelow are summaries of consecutive parts of one text. "
                 "Write one summary of the whole text:\n\n{summaries}")


def summarize_long(text: str, *, instructions: str = "Summarize the following text in a few sentences.",
                   chunk_tokens: int | None = None, overlap: int = 200, profile: str | None = None,
                   model: str | None = None, max_workers: int | None = None, progress: bool = True,
                   **params) -> Generation:
    """Map-then-reduce: summarize each chunk (`generate_many`), then the summaries together.

    `chunk_tokens` defaults to half of what the context window leaves after the
    reply. Summaries still over the budget are reduced again the same way. The
    returned `Generation` is the final summary; its usage and cost add up every call.
    """
    _need_text(text, "summarize_long")
    _need_text(instructions, "summarize_long's instructions")
    client = client_for(profile, model=model)
    if chunk_tokens is None:
        reply = params.get("max_tokens") or client.profile.defaults.get("max_tokens") or 512
        chunk_tokens = (client.profile.context_window - reply - estimate_tokens(instructions) - 64) // 2
    overlap = min(overlap, chunk_tokens // 4)
    calls: list[Generation] = []
    while estimate_tokens(text) > chunk_tokens:
        chunks = split_text(text, chunk_tokens, overlap)
        prompts = [MAP_PROMPT.format(instructions=instructions, n=n, total=len(chunks), chunk=c)
                   for n, c in enumerate(chunks, 1)]
        parts = generate_many(prompts, max_workers, profile=profile, model=model, errors="raise",
                              progress=progress, **params)
        if any(p is None for p in parts):
            raise Interrupted(f"stopped by user: {sum(p is not None for p in parts)} of {len(parts)} parts "
                              "summarized", partial=None)
        calls += parts
        shorter = "\n\n".join(p.text.strip() for p in parts)
        if estimate_tokens(shorter) >= estimate_tokens(text):
            raise ConfigError("the part summaries are not shorter than the text: lower max_tokens "
                              "or raise chunk_tokens")
        text = shorter
    prompt = REDUCE_PROMPT.format(instructions=instructions, summaries=text) if calls else \
        f"{instructions}\n\n{text}"
    final = client.generate(prompt, **params)
    final.usage = Usage(sum(g.usage.prompt_tokens for g in calls) + final.usage.prompt_tokens,
                        sum(g.usage.completion_tokens for g in calls) + final.usage.completion_tokens,
                        estimated=any(g.usage.estimated for g in (*calls, final)))
    final.cost_usd = sum(g.cost_usd for g in calls) + final.cost_usd
    return final
