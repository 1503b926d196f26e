"""The simulated model's answer to a packed request (several numbered prompts in one, see
`nb_model.packing`).

A real model asked for "### k #tag" sections answers each item in turn; the
simulated one does so deterministically: section k is exactly what the engine
answers for item k alone with max_tokens set to the pack's per-item budget. So a
packed run and an unpacked run of the same prompts give the same texts, and tests
and tutorials can check the split item by item.

Faults (`faults.py`) that break the format, to exercise the client's fallback:
``pack-drop`` leaves out one item's section, ``pack-merge`` drops one section's
header so two answers run together (item 2 in both cases, the last item of a pack
of one).
"""
from __future__ import annotations

import re
from typing import Any

from .. import packing
from .engine import SimulatedEngine, TokenStream, _limit

_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")


def packed_answer(engine: Any, prompt: str, params: dict, fault: str = "") -> TokenStream | None:
    """The pieces of the answer to a packed prompt, or None when `prompt` is not one (or the engine
    is a real model, which reads the instructions itself)."""
    if not isinstance(engine, SimulatedEngine):
        return None
    before, after = "", ""
    if prompt.endswith("\nAssistant:") and "User: Answer each" in prompt:  # a chat request, flattened (see
        at = prompt.rindex("User: Answer each") + len("User: ")       # engine.messages_to_prompt): each item
        before, after, prompt = prompt[:at], "\nAssistant:", prompt[at: -len("\nAssistant:")]  # as a chat
    parsed = packing.parse_request(prompt)
    if parsed is None:
        return None
    items, budget = parsed
    tag = packing.tag_of(items)
    item_params = {**params, "max_tokens": min(budget, params.get("max_tokens") or budget)}
    sections = [[packing.header(k, tag), "".join(engine.generate(before + item + after, **item_params)).strip()]
                for k, item in enumerate(items, 1)]
    broken = min(2, len(sections)) - 1
    if fault == "pack-drop":
        del sections[broken]
    elif fault == "pack-merge" and broken > 0:
        sections[broken][0] = ""
    text = "\n\n".join("\n".join(part for part in section if part) for section in sections)
    return TokenStream(_limit(iter(_PIECE_RE.findall(text)), params.get("max_tokens") or 2048))
