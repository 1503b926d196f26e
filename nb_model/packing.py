"""Packing several short prompts into one request, and splitting the answer back per item.

The target API's own performance advice is to merge many short requests into one
longer input; under a requests-per-second limit it is the only way past that many
items per second, and the instructions are paid once per pack instead of once per item.

A pack is a numbered list with a clear answer format::

    Answer each of the 3 numbered items below on its own. Reply with exactly 3 sections in the
    same order; start section k with the line "### k #kqdmwa" and write nothing else. Keep each
    answer under 20 tokens.

    ### 1 #kqdmwa
    <prompt 1>
    ...

The tag after the number (`#kqdmwa`) is a digest of the pack's prompts, so an answer
that itself contains "### 2" (Markdown headings, quoted delimiters) does not split
the answer there. `split_answer` returns, per item, its text or None when its part is
missing, duplicated or cannot be read — and for the item before a missing part, whose
section may have swallowed it; the caller retries those items alone.

The pack's usage is apportioned to its items (`apportion`): prompt tokens in
proportion to each item's prompt (the shared instructions spread the same way),
completion tokens in proportion to each item's part; the shares are whole tokens and
sum exactly to the pack's usage.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

from .tokens import estimate_tokens

MAX_PACK = 20            # items per pack at most (longer lists get worse answers from real models)
AUTO_PROMPT_TOKENS = 300  # pack="auto" packs only prompts up to this many (estimated) tokens
DEFAULT_ITEM_TOKENS = 256  # an item's answer budget when no max_tokens is given
HEADER_TOKENS = 8         # budget for one "### k #tag" line in the answer

INSTRUCTIONS = ("Answer each of the {n} numbered items below on its own. Reply with exactly {n} sections in the "
                "same order; start section k with the line \"### k #{tag}\" and write nothing else. "
                "Keep each answer under {budget} tokens.")
_INSTRUCTIONS_RE = re.compile(r"^Answer each of the (\d+) numbered items below on its own\. .*?"
                              r"\"### k #([a-z]{6})\".*?Keep each answer under (\d+) tokens\.\n\n", re.S | re.M)


def tag_of(prompts: Sequence[str]) -> str:
    """Six letters naming a pack (a digest of its prompts: the same pack gets the same request). Letters,
    not hex digits: a word costs one token, six digits cost six."""
    digest = hashlib.sha256("\x00".join(prompts).encode("utf-8", "surrogatepass")).digest()
    return "".join(chr(ord("a") + b % 26) for b in digest[:6])


def header(k: int, tag: str) -> str:
    return f"### {k} #{tag}"


def _header_re(tag: str) -> re.Pattern:
    return re.compile(rf"^[ \t]*### (\d+) #{tag}[ \t]*$", re.M)


def build(prompts: Sequence[str], item_tokens: int) -> str:
    """The packed prompt of `prompts`, each answer asked to stay under `item_tokens`."""
    tag = tag_of(prompts)
    body = "\n\n".join(f"{header(k, tag)}\n{p.strip()}" for k, p in enumerate(prompts, 1))
    return INSTRUCTIONS.format(n=len(prompts), tag=tag, budget=item_tokens) + "\n\n" + body


def parse_request(prompt: str) -> tuple[list[str], int] | None:
    """(items, per-item token budget) of a packed prompt made by `build`, else None."""
    m = _INSTRUCTIONS_RE.search(prompt)
    if m is None:
        return None
    n, tag, budget = int(m.group(1)), m.group(2), int(m.group(3))
    parts = split_answer(prompt[m.end():], n, tag)
    if any(p is None for p in parts):
        return None
    return [p for p in parts if p is not None], budget


def split_answer(text: str, n: int, tag: str, truncated: bool = False) -> list[str | None]:
    """Each item's part of a packed answer, in order; None for a part that is missing, duplicated or
    out of range. With `truncated` (the answer hit max_tokens), the last part found is None too."""
    marks = [(m, int(m.group(1))) for m in _header_re(tag).finditer(text)]
    seen: dict[int, int] = {}
    for _, k in marks:
        seen[k] = seen.get(k, 0) + 1
    parts: list[str | None] = [None] * n
    for i, (m, k) in enumerate(marks):
        if not 1 <= k <= n or seen[k] != 1:
            continue
        end = marks[i + 1][0].start() if i + 1 < len(marks) else len(text)
        parts[k - 1] = text[m.end():end].strip("\n").strip()
    parts = [p if p else None for p in parts]
    # a missing header runs that answer into the section before it: distrust the one before a gap too
    gaps = [k for k in range(1, n) if parts[k] is None]
    for k in gaps:
        parts[k - 1] = None
    if truncated and marks:  # the answer hit max_tokens: its last section may be cut short
        last = marks[-1][1]
        if 1 <= last <= n:
            parts[last - 1] = None
    return parts


def item_budget(params: dict, profile_defaults: dict) -> int:
    """The answer budget of one item: its max_tokens, else the profile's, else DEFAULT_ITEM_TOKENS."""
    return int(params.get("max_tokens") or profile_defaults.get("max_tokens") or DEFAULT_ITEM_TOKENS)


def pack_tokens(n: int, budget: int) -> int:
    """max_tokens of a pack of n items: every answer at its budget plus its header line."""
    return n * (budget + HEADER_TOKENS)


def fits(prompts: Sequence[str], budget: int, cap: int, window: int) -> bool:
    """Whether a pack of `prompts` can answer every item in full: its max_tokens within the profile's cap,
    the packed prompt plus that within the context window."""
    reply = pack_tokens(len(prompts), budget)
    return reply <= cap and estimate_tokens(build(prompts, budget)) + reply <= window


def plan(prompts: Sequence[str | None], size: int | str, budget: int, cap: int, window: int
         ) -> list[list[int]]:
    """Groups of indices to send as packs (each of ≥ 2 items); indices left out go alone.

    `size` is the most items per pack (an int) or "auto" (as many as fit, up to MAX_PACK, of prompts
    of at most AUTO_PROMPT_TOKENS). `None` entries (items not to pack) are skipped. Every pack fits
    (see `fits`): a group is closed as soon as the next item would not fit.
    """
    auto = size == "auto"
    most = MAX_PACK if auto else int(size)
    groups: list[list[int]] = []
    current: list[int] = []
    for i, prompt in enumerate(prompts):
        if prompt is None or (auto and estimate_tokens(prompt) > AUTO_PROMPT_TOKENS):
            continue
        trial = [prompts[j] for j in current] + [prompt]
        if len(trial) > most or not fits(trial, budget, cap, window):
            if len(current) >= 2:
                groups.append(current)
            current = [i] if fits([prompt], budget, cap, window) else []
            continue
        current.append(i)
    if len(current) >= 2:
        groups.append(current)
    return groups


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in whole numbers in proportion to `weights` (largest remainders); sums to `total`."""
    if not weights:
        return []
    weights = [max(0, w) for w in weights]
    whole = sum(weights)
    if whole == 0:
        weights, whole = [1] * len(weights), len(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares
