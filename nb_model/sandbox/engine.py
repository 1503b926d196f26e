"""Text engines behind the sandbox server, and the simulated one.

The `Engine` protocol (implemented here by `SimulatedEngine`, later by a
llama.cpp engine)::

    model: str                                     # name reported to clients
    count_tokens(text: str) -> int
    generate(prompt, *, max_tokens, temperature, top_p, top_k, language, seed) -> TokenStream

`generate` returns a `TokenStream`: an iterator of text pieces, one per token,
each carrying its leading whitespace (so ``"".join(stream)`` is the text).
Once exhausted, `stream.finish_reason` is ``"stop"`` (natural end) or
``"length"`` (max_tokens reached); `stream.close()` abandons the generation.
An engine writes a plain generator that *returns* its finish reason and wraps
it: ``TokenStream(gen())``.

How `SimulatedEngine` chooses words (it exists to teach sampling parameters):

* A reply is ``[sandbox]`` followed by sentences made of slots (opener,
  subject, verb, object, ending). Each slot has candidates ranked from common to
  rare (see `vocab.py`), plus nouns taken from the prompt.
* Candidate logit = ``-1.1 * ln(rank + 1)`` + a context bonus in [0, 1.6) hashed
  from (prompt, language, sentence, slot) with hashlib: the ranking, and so the
  greedy text, depends on the prompt only.
* ``top_k`` keeps the k likeliest candidates; ``top_p`` keeps the smallest head
  whose probability (at temperature 1) reaches top_p; ``temperature`` then
  reshapes what is left (p ~ exp(logit / T)): T = 0 always takes the likeliest
  (greedy), higher T reaches rarer words. This is llama.cpp's sampler order.
* One uniform draw per slot from a RNG seeded by (prompt, language, seed), so
  the same inputs give the same text byte for byte, a new seed gives new draws,
  and a small temperature change moves only a few words.
* The reply stops after a whole sentence once 40-120 tokens (fixed by the
  prompt) are out; a prompt with the word "long" or "essay" aims at ~3000.
* A grounded prompt (numbered passages, then a question) is answered by quoting the passage(s) that
  share the most question words and citing their numbers (see `grounded.py`).
* A request for structure (an OpenAI ``response_format``, or nb_model's JSON Schema
  instructions in the prompt) gets valid JSON of the schema's shape, and a prompt
  asking for one word among listed choices gets one of them: see `schema.py`.
* A prompt asking for a format ("as JSON", "in Markdown", "in Python",
  "as HTML") gets the same kind of sentences wrapped in that format, so the
  output formats of the magic can be shown.

Generated tokens are words and punctuation marks (one character each in Chinese), so the usage a reply
reports is its number of pieces. Prompts are counted with nb_model's shared estimator
(`nb_model.tokens.estimate_tokens`, about one token per CJK character), like a real tokenizer would.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from typing import Generator, Iterator, Protocol, Sequence

from ..tokens import estimate_tokens
from .grounded import answer as answer_grounded
from .vocab import SHAPES, STOPWORDS, VOCABULARIES, ZH_BREAKS, Vocabulary

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PROMPT_WORD_RE = re.compile(r"[^\W\d_]{4,20}")
_LONG_RE = re.compile(r"\b(long|essay)\b", re.IGNORECASE)
_FORMAT_RE = re.compile(r"\b(?:as|in)\s+(json|markdown|python|html)\b", re.IGNORECASE)
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")
LONG_TARGET = 3000
PARAGRAPH_SENTENCES = 5
BONUS = 1.6  # width of the context bonus added to a logit
FAVOURED = -0.9  # base logit of a noun taken from the prompt


class TokenStream(Iterator[str]):
    """Iterator of text pieces; `finish_reason` is set once it is exhausted."""

    def __init__(self, pieces: Generator[str, None, str]):
        self._pieces = pieces
        self.finish_reason: str | None = None

    def __iter__(self) -> "TokenStream":
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as end:
            self.finish_reason = end.value or "stop"
            raise

    def close(self) -> None:
        self._pieces.close()


class Engine(Protocol):
    """What the sandbox server needs from a text generator."""

    model: str

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, top_p: float,
                 top_k: int | None, language: str | None, seed: int | None) -> TokenStream: ...


def count_tokens(text: str) -> int:
    """Tokens of a prompt: the shared character-class aware estimate (about one per CJK character)."""
    return estimate_tokens(text)


def count_pieces(text: str) -> int:
    """Words and punctuation marks of generated (spaced) text: its number of pieces."""
    return len(_TOKEN_RE.findall(text))


LANGUAGES = tuple(VOCABULARIES)


def language_code(language: str | None) -> str:
    """"zh-CN", "zh_Hans", "EN" → "zh", "zh", "en" (None → "en")."""
    return re.split(r"[-_]", (language or "en").strip().lower(), maxsplit=1)[0]


def messages_to_prompt(messages: object) -> str:
    """Flatten OpenAI chat `messages` into ``System: …\\nUser: …\\nAssistant:``."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    lines = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError("each message must be an object with a 'role' and a 'content'")
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError("a message 'content' must be a string or a list of parts")
        lines.append(f"{message['role'].capitalize()}: {content}")
    lines.append("Assistant:")
    return "\n".join(lines)


def _digest(*parts: object) -> bytes:
    h = hashlib.blake2b(digest_size=64)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass") + b"\x00")
    return h.digest()


def pick_index(logits: Sequence[float], u: float, *, temperature: float, top_p: float,
               top_k: int | None) -> int:
    """Index chosen among `logits` (sorted, likeliest first) by the uniform draw `u`."""
    keep = len(logits)
    if top_k:
        keep = min(keep, top_k)
    if top_p < 1.0:
        weights = [math.exp(x - logits[0]) for x in logits]
        total, cumulative = sum(weights), 0.0
        for i, w in enumerate(weights[:keep]):
            cumulative += w / total
            if cumulative >= top_p - 1e-12:
                keep = i + 1
                break
    if temperature <= 0 or keep == 1:
        return 0
    weights = [math.exp((x - logits[0]) / temperature) for x in logits[:keep]]
    u *= sum(weights)
    for i, w in enumerate(weights):
        u -= w
        if u < 0:
            return i
    return keep - 1


class _Sampler:
    """Chooses one phrase per slot; see the module docstring."""

    def __init__(self, key: bytes, seed: int | None, temperature: float, top_p: float,
                 top_k: int | None):
        self.key = key
        self.rng = random.Random(int.from_bytes(_digest(key, "seed", seed)[:16], "big"))
        self.params = {"temperature": max(0.0, temperature), "top_p": top_p, "top_k": top_k}

    def choose(self, options: Sequence[str], context: tuple, favoured: Sequence[str] = ()) -> str:
        bonus = _digest(self.key, *context)
        scored = [(-1.1 * math.log(i + 1) + BONUS * bonus[i] / 256, text)
                  for i, text in enumerate(options)]
        scored += [(FAVOURED + BONUS * bonus[len(options) + j] / 256, text)
                   for j, text in enumerate(favoured)]
        scored.sort(key=lambda s: -s[0])
        u = self.rng.random()  # always drawn, so draws stay aligned across parameters
        return scored[pick_index([s[0] for s in scored], u, **self.params)][1]


class SimulatedEngine:
    """Deterministic, parameter-sensitive fake language model (stdlib only)."""

    structured = True  # takes `schema=` (an OpenAI response_format's JSON Schema): see schema.py
    languages = LANGUAGES  # the server answers 400 for any other `language`

    def __init__(self, model: str = "sandbox"):
        self.model = model

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def generate(self, prompt: str, *, max_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int | None = None, language: str | None = None,
                 seed: int | None = None, schema: dict | None = None) -> TokenStream:
        from .schema import answer, pieces
        structured = answer(prompt, schema)
        if structured is not None:
            return TokenStream(_limit(pieces(structured), max_tokens))
        lang = language_code(language)
        lang = lang if lang in VOCABULARIES else "en"
        key = _digest("sandbox", lang, prompt)
        sampler = _Sampler(key, seed, temperature, top_p, top_k)
        target = LONG_TARGET if _LONG_RE.search(prompt) else 40 + int.from_bytes(key[:2], "big") % 81
        vocab, nouns = VOCABULARIES[lang], _prompt_nouns(prompt, VOCABULARIES[lang])
        grounded = answer_grounded(prompt)
        if grounded is not None:  # numbered passages and a question: quote and cite (see grounded.py)
            return TokenStream(_limit(iter(_PIECE_RE.findall(grounded)), max_tokens))
        shape = _FORMAT_RE.search(prompt)
        if shape:
            text = _formatted(shape.group(1).lower(), vocab, nouns, sampler)
        else:
            text = self._text(vocab, nouns, sampler, target)
        return TokenStream(_limit(text, max_tokens))

    def _text(self, vocab: Vocabulary, nouns: list[str], sampler: _Sampler, target: int) -> Iterator[str]:
        yield from ("[", "sandbox", "]")
        count, index = 3, 0
        while count < target:
            words = _sentence(vocab, nouns, sampler, index)
            lead = "\n\n" if index and index % PARAGRAPH_SENTENCES == 0 else " " if vocab.spaced or not index else ""
            for i, word in enumerate(words):
                yield (lead if i == 0 else "" if word in ",." or not vocab.spaced else " ") + word
            count += len(words)
            index += 1


def _formatted(fmt: str, vocab: Vocabulary, nouns: list[str], sampler: _Sampler) -> Iterator[str]:
    """Four sentences wrapped in the asked format, cut into word/punctuation pieces."""
    s = [_joined(vocab, _sentence(vocab, nouns, sampler, i)) for i in range(4)]
    if fmt == "json":
        import json
        text = json.dumps({"model": "sandbox", "summary": s[0], "points": s[1:]}, ensure_ascii=False, indent=1)
    elif fmt == "markdown":
        text = f"## {s[0]}\n\n" + "".join(f"- {x}\n" for x in s[1:3]) + f"\n**{vocab.in_short}** {s[3]}"
    elif fmt == "python":
        text = (f'```python\ndef answer(question: str) -> str:\n    """{s[0]}"""\n'
                f'    notes = [\n        "{s[1]}",\n        "{s[2]}",\n    ]\n    return " ".join(notes)\n```')
    else:
        text = f"<p><b>{s[0]}</b></p>\n<ul>" + "".join(f"<li>{x}</li>" for x in s[1:3]) + f"</ul>\n<p>{s[3]}</p>"
    yield from ("[", "sandbox", "]", "\n")
    yield from _PIECE_RE.findall(text)


def _limit(pieces: Iterator[str], max_tokens: int) -> Generator[str, None, str]:
    for n, piece in enumerate(pieces):
        if n >= max_tokens:
            return "length"
        yield piece
    return "stop"


def _joined(vocab: Vocabulary, words: list[str]) -> str:
    if not vocab.spaced:
        return "".join(words)
    return " ".join(words).replace(" .", ".").replace(" ,", ",")


_ZH_BREAK_RE = re.compile("|".join(sorted(ZH_BREAKS.split("|"), key=len, reverse=True)))
_CJK_RUN_RE = re.compile(r"[\u4e00-\u9fff]+")


def _zh_nouns(prompt: str, limit: int) -> list[str]:
    """Candidate nouns of a Chinese prompt: runs of 2-4 ideographs between instruction words and particles."""
    seen: dict[str, None] = {}
    for run in _CJK_RUN_RE.findall(prompt):
        for part in _ZH_BREAK_RE.split(run):
            if 2 <= len(part) <= 4:
                seen.setdefault(part)
    return list(seen)[:limit]


def _prompt_nouns(prompt: str, vocab: Vocabulary, limit: int = 4) -> list[str]:
    if not vocab.spaced:
        return _zh_nouns(prompt, limit)
    seen: dict[str, None] = {}
    for word in _PROMPT_WORD_RE.findall(prompt):
        word = word.lower()
        if len(word) > 4 and word.endswith("s") and word[-2] not in "siu":
            word = word[:-1]  # crude singular: "notebooks" -> "notebook"
        if word not in STOPWORDS and word != "sandbox":
            seen.setdefault(word)
        if len(seen) == limit:
            break
    return [vocab.prompt_noun.format(word=w, Word=w.capitalize()) for w in seen]


def _sentence(vocab: Vocabulary, nouns: list[str], sampler: _Sampler, index: int) -> list[str]:
    """One sentence as a list of tokens, ending with '.'."""
    shape = sampler.choose(SHAPES, (index, "shape"))
    slot = {"C": sampler.choose(vocab.openers, (index, "C")),
            "S": sampler.choose(vocab.subjects, (index, "S"), nouns)}
    slot["V"] = sampler.choose(vocab.verbs, (index, "V"))
    slot["O"] = sampler.choose([o for o in vocab.objects if o != slot["S"]], (index, "O"),
                               [n for n in nouns if n != slot["S"]])
    slot["E"] = sampler.choose(vocab.endings, (index, "E"))
    order = shape
    if vocab.ending_before_verb and "E" in order:
        order = order.replace("E", "").replace("V", "EV")
    if "C" in shape:
        order = order.replace("SV", "VS") if vocab.verb_second else order
        if vocab.opener_comma:
            slot["C"] += " " + vocab.comma
    if not vocab.spaced:  # one token per character
        return [ch for s in order for ch in slot[s] if not ch.isspace()] + [vocab.period]
    words = " ".join(slot[s] for s in order).split() + [vocab.period]
    words[0] = words[0][:1].upper() + words[0][1:]
    return words
