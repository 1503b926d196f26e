"""Structured answers of the simulated engine: JSON of a schema's shape, and one-word choices.

A request asks for structure in one of two ways:

* OpenAI ``response_format`` (``{"type": "json_schema", "json_schema": {"schema": …}}`` or
  ``{"type": "json_object"}``), read by the chat wire into ``Job.schema``;
* the prompt itself, with the instructions nb_model writes for servers without
  ``response_format``: a line ending ``… matching this JSON Schema:``, the schema as
  JSON, then an example; the instructions run to the end of the prompt and the
  text before them is the data.

The answer is deterministic and valid for the schema, with values taken from the
rest of the prompt (the *text*) so tests can check them:

* an enum: a sentiment-like enum (values starting ``pos``/``neg``/``neu``/``mixed``)
  follows a small keyword lexicon (more positive than negative words: positive, …);
  any other enum takes the value named in the text most often (later mentions
  win ties: the data follows the instructions), else its first value;
* a number: the first price-like number of the text (``$12.99``, ``12,50 €``), else the
  first number, else null when null is allowed (else the minimum or 0); a bounded
  number (``minimum`` and ``maximum``, e.g. a 1-5 rating) follows the sentiment instead;
* a boolean: true when the sentiment is positive;
* a string: the one or two words after the first ``the`` / ``my`` / ``this`` / ``a`` (a
  product, in reviews), else the text's first longer word; ``null`` when allowed and
  nothing fits;
* an array: one item; a nested object: recursively.

A prompt that asks for one word among listed choices (``Answer with one word: a, b
or c`` / ``one of: a, b, c`` / ``Pick a colour (a/b/c)``) gets one of them by the enum rule.

The faults ``json-noise`` (the JSON inside prose and a code fence, with a trailing
comma: a tolerant parser repairs it) and ``json-invalid`` (the JSON cut in half: only
a retry helps) change whatever text the engine produced.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

SCHEMA_MARK = "matching this JSON Schema:"
FAULTS = ("json-noise", "json-invalid")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")
_PRICE = re.compile(r"(?:[$€£¥]\s?(\d+(?:[.,]\d{1,2})?))|(\d+(?:[.,]\d{1,2})?)\s?(?:[$€£¥]|dollars?|euros?|usd|eur|元)",
                    re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PRODUCT = re.compile(r"\b(?:the|my|this|our|a|an)\s+([A-Za-z][\w-]{2,})(?:\s+([A-Za-z][\w-]{2,}))?", re.IGNORECASE)
VERBS = {"is", "was", "are", "were", "has", "have", "had", "keeps", "holds", "arrived", "broke", "stopped", "died",
         "cracked", "heats", "leaks", "came", "feels", "feel", "works", "costs", "clips", "lasts", "looks", "does",
         "and", "but", "with", "for", "from", "in", "on", "after"}
_CHOICE = re.compile(
    r"(?:one\s+word[^:\n]{0,30}|one\s+of\s*):\s*([^\n.?]+)"
    r"|\b(?:answer|reply|respond|pick|choose)\b[^\n(]{0,60}\(([\w-]+(?:\s*/\s*[\w-]+)+)\)", re.IGNORECASE)

POSITIVE = {"love", "loved", "loves", "great", "excellent", "perfect", "amazing", "good", "happy", "best",
            "recommend", "fantastic", "wonderful", "works", "comfortable", "fast", "beautiful", "solid",
            "sturdy", "delighted", "pleased", "nice", "brilliant", "superb", "reliable", "worth", "好", "喜欢"}
NEGATIVE = {"bad", "broke", "broken", "terrible", "awful", "poor", "worst", "refund", "disappointed",
            "disappointing", "cheap", "useless", "returned", "return", "slow", "leaks", "leaked", "hate",
            "stopped", "cracked", "waste", "never", "horrible", "flimsy", "faulty", "died", "差", "坏"}
STOP = {"this", "that", "with", "from", "have", "what", "your", "extract", "fields", "review", "text",
        "reply", "json", "schema", "object", "only", "answer", "following", "which", "about", "there",
        "their", "they", "were", "been", "will", "would", "could", "should", "after", "before", "into"}


# -- finding the request ---------------------------------------------------------
def from_response_format(value: Any) -> dict | None:
    """The schema of an OpenAI `response_format`, {} for json_object, None for text/absent;
    ValueError (one line) when it is malformed."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError("response_format must be an object with a 'type'")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        inner = value.get("json_schema")
        if not isinstance(inner, dict) or not isinstance(inner.get("schema", {}), dict):
            raise ValueError("response_format.json_schema must be an object with a 'schema' object")
        return inner.get("schema") or {}
    raise ValueError(f"response_format.type must be text, json_object or json_schema, got {kind!r}")


def in_prompt(prompt: str) -> tuple[dict | None, str]:
    """(schema, the prompt without it) when the prompt carries nb_model's schema instruction."""
    at = prompt.find(SCHEMA_MARK)
    if at < 0:
        return None, prompt
    start = prompt.find("{", at)
    if start < 0:
        return None, prompt
    try:
        schema, _ = json.JSONDecoder().raw_decode(prompt, start)
    except ValueError:
        return None, prompt
    if not isinstance(schema, dict):
        return None, prompt
    return schema, prompt[: prompt.rfind("\n", 0, at) + 1]  # the instructions (from their line on) are not data


def answer(prompt: str, schema: dict | None = None) -> str | None:
    """The structured answer for this request, or None when it asks for none."""
    text = prompt
    if schema is None:
        schema, text = in_prompt(prompt)
    if schema is not None:
        return json.dumps(_value(schema or {"type": "object"}, text, "answer"), ensure_ascii=False)
    choices = _choices(prompt)
    return _pick(choices, prompt) if choices else None


def pieces(text: str) -> Iterator[str]:
    """`text` as word/punctuation pieces, each with its leading whitespace (so they join back to it)."""
    found = _PIECE.findall(text)
    rest = len(text) - sum(map(len, found))
    yield from found
    if rest:  # trailing whitespace
        yield text[len(text) - rest:]


def corrupt(text: str, kind: str) -> str:
    """The engine's `text` as a fault `kind` of FAULTS damages it."""
    if kind == "json-noise":
        noisy = re.sub(r"\}\s*$", ",}", text.strip())  # a trailing comma
        return f"Sure! Here is the JSON you asked for:\n```json\n{noisy}\n```\nLet me know if you need more."
    return text[: max(1, len(text) // 2)]


# -- values ---------------------------------------------------------------------------
def _types(schema: dict) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    if isinstance(kind, str):
        return [kind]
    if "enum" in schema:
        return []
    if "properties" in schema:
        return ["object"]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return [t for sub in schema[key] if isinstance(sub, dict) for t in _types(sub) or ["string"]]
    return ["string"]


def _value(schema: dict, text: str, name: str) -> Any:
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return _pick(schema["enum"], text)
    for key in ("anyOf", "oneOf"):  # the first branch that is not null
        subs = [s for s in schema.get(key) or [] if isinstance(s, dict) and s.get("type") != "null"]
        if subs:
            first = dict(subs[0])
            if len(subs) < len(schema[key]) and "enum" not in first:  # a null branch: null is allowed
                first["type"] = [t for t in _types(first) if t != "null"] + ["null"]
            return _value(first, text, name)
    types = _types(schema)
    nullable = "null" in types
    kind = next((t for t in types if t != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        if not props:
            return {"answer": _words(text)}
        return {key: _value(sub if isinstance(sub, dict) else {}, text, key) for key, sub in props.items()}
    if kind == "array":
        item = schema.get("items") if isinstance(schema.get("items"), dict) else {"type": "string"}
        return [_value(item, text, name)]
    if kind in ("number", "integer"):
        return _number(schema, text, kind, nullable)
    if kind == "boolean":
        return _sentiment(text) > 0
    if kind == "null":
        return None
    return _string(text, name, nullable)


def _number(schema: dict, text: str, kind: str, nullable: bool):
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        mood = _sentiment(text)
        value = high if mood > 0 else low if mood < 0 else (low + high) / 2
    else:
        m = _PRICE.search(text)
        raw = (m.group(1) or m.group(2)) if m else None
        if raw is None:
            n = _NUMBER.search(text)
            raw = n.group() if n else None
        if raw is None:
            return None if nullable else (low if isinstance(low, (int, float)) else 0)
        value = float(raw.replace(",", "."))
    return int(round(value)) if kind == "integer" else value


def _string(text: str, name: str, nullable: bool) -> str | None:
    m = _PRODUCT.search(text)
    while m and m.group(1).lower() in STOP:
        m = _PRODUCT.search(text, m.end())
    if m:
        second = m.group(2)
        keep = second and second.lower() not in VERBS and not second.lower().endswith("ed")
        return (m.group(1) + (" " + second if keep else "")).lower()
    word = next((w for w in _WORD.findall(text) if len(w) > 3 and w.lower() not in STOP), None)
    return word.lower() if word else (None if nullable else "")


def _words(text: str, n: int = 8) -> str:
    return " ".join(_WORD.findall(text)[:n])


def _sentiment(text: str) -> int:
    words = [w.lower() for w in _WORD.findall(text)]
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return (score > 0) - (score < 0)


def _pick(options: list, text: str) -> Any:
    labels = [str(o).lower() for o in options]
    moods = {1: ("pos",), -1: ("neg",), 0: ("neu", "mixed", "neither")}
    if sum(any(l.startswith(p) for p in ("pos", "neg", "neu", "mixed")) for l in labels) >= 2:
        mood = _sentiment(text)
        for i, l in enumerate(labels):
            if l.startswith(moods[mood]):
                return options[i]
        for fallback in (1, -1):  # no neutral value: lean to the sign of the raw count, else positive
            if mood == 0:
                for i, l in enumerate(labels):
                    if l.startswith(moods[fallback]):
                        return options[i]
    words = [w.lower() for w in _WORD.findall(text)]
    best, best_key = options[0], (0, -1)
    for option, l in zip(options, labels):
        hits = [i for i, w in enumerate(words) if w == l]
        key = (len(hits), hits[-1] if hits else -1)
        if key > best_key:
            best, best_key = option, key
    return best


def _choices(prompt: str) -> list[str]:
    m = _CHOICE.search(prompt)
    if not m:
        return []
    if m.group(2):
        return [c.strip() for c in m.group(2).split("/")]
    parts = re.split(r",\s*|\s+or\s+|\s+and\s+", m.group(1).strip())
    words = [p.strip(" '\"") for p in parts if p.strip(" '\"")]
    return words if 2 <= len(words) <= 12 and all(len(w.split()) <= 2 for w in words) else []
