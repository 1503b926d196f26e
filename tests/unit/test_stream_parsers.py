"""Property tests of the JSON-lines and SSE decoders: any byte split gives the same text."""
import json

from hypothesis import given, settings, strategies as st

from nb_model.errors import ProtocolError
from nb_model.protocols import openai, seed

texts = st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=12)
eols = st.sampled_from(["\n", "\r\n", "\r"])


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


def decode(decoder, pieces):
    chunks = []
    for piece in pieces:
        chunks.extend(decoder.feed(piece))
    chunks.extend(decoder.close())
    return chunks


def jsonlines_stream(parts, eol, keepalive):
    lines = []
    for p in parts:
        lines.append(json.dumps({"text": p}, ensure_ascii=False))
        if keepalive:
            lines.append("")
    lines.append(json.dumps({"text": "", "finish_reason": "stop", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
    return (eol.join(lines) + eol).encode("utf-8")


def sse_stream(parts, eol, chat=True):
    events = [": ping"]
    for p in parts:
        choice = {"delta": {"content": p}} if chat else {"text": p}
        events.append("data: " + json.dumps({"choices": [choice]}, ensure_ascii=False))
        events.append("")
    events += ["data:" + json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}]}), "",
               "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}), "",
               "data: [DONE]", ""]
    return (eol.join(events) + eol).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(texts, eols, st.booleans(), st.lists(st.integers(min_value=0), max_size=20))
def test_jsonlines_any_split_same_text(parts, eol, keepalive, cuts):
    data = jsonlines_stream(parts, eol, keepalive)
    chunks = decode(seed.stream_decoder(), split_at(data, cuts))
    assert "".join(c.text for c in chunks) == "".join(parts)
    assert chunks[-1].finish_reason == "stop" and chunks[-1].done
    assert chunks[-1].usage == {"prompt_tokens": 1, "completion_tokens": 2}


@settings(max_examples=300, deadline=None)
@given(texts, eols, st.booleans(), st.lists(st.integers(min_value=0), max_size=20))
def test_sse_any_split_same_text(parts, eol, chat, cuts):
    data = sse_stream(parts, eol, chat)
    adapter = openai.CHAT if chat else openai.COMPLETIONS
    chunks = decode(adapter.stream_decoder(), split_at(data, cuts))
    assert "".join(c.text for c in chunks) == "".join(parts)
    assert any(c.finish_reason == "stop" for c in chunks)
    assert chunks[-1].done
    assert any(c.usage == {"prompt_tokens": 3, "completion_tokens": 4} for c in chunks)


def test_sse_multiline_data_and_fields():
    data = b"event: message\nid: 1\nretry: 10\ndata: {\"choices\":\ndata: [{\"delta\": {\"content\": \"hi\"}}]}\n\n"
    chunks = decode(openai.CHAT.stream_decoder(), [data])
    assert [c.text for c in chunks] == ["hi"]


def test_utf8_split_inside_character():
    data = jsonlines_stream(["héllo wörld ñ 日本"], "\n", False)
    pieces = [data[i:i + 1] for i in range(len(data))]
    chunks = decode(seed.stream_decoder(), pieces)
    assert "".join(c.text for c in chunks) == "héllo wörld ñ 日本"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_gives_protocol_error_only(garbage, cuts):
    for decoder in (seed.stream_decoder(), openai.CHAT.stream_decoder(), openai.COMPLETIONS.stream_decoder()):
        try:
            decode(decoder, split_at(garbage, cuts))
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=8))
def test_wrong_json_shapes_give_protocol_error_only(obj):
    line = json.dumps(obj).encode() + b"\n"
    for decoder in (seed.stream_decoder(), openai.CHAT.stream_decoder()):
        payload = line if decoder.__class__.__module__.endswith("seed") else b"data: " + line + b"\n"
        try:
            decode(decoder, [payload])
        except ProtocolError:
            pass


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=6)
shaped = st.fixed_dictionaries({}, optional={
    "text": json_values, "finish_reason": json_values, "usage": json_values, "model": json_values,
    "error": json_values, "output": json_values,
    "choices": st.lists(st.fixed_dictionaries({}, optional={
        "delta": json_values, "message": json_values, "text": json_values, "finish_reason": json_values}) | json_values,
        max_size=2)})


@settings(max_examples=400, deadline=None)
@given(shaped)
def test_near_valid_shapes_give_protocol_error_only(obj):
    line = json.dumps(obj).encode()
    cases = [(seed.stream_decoder(), line + b"\n"), (openai.CHAT.stream_decoder(), b"data: " + line + b"\n\n"),
             (openai.COMPLETIONS.stream_decoder(), b"data: " + line + b"\n\n")]
    for decoder, payload in cases:
        try:
            decode(decoder, [payload])
        except ProtocolError:
            pass
    for parse in (seed.parse_reply, openai.CHAT.parse_reply, openai.COMPLETIONS.parse_reply):
        try:
            parse(obj)
        except ProtocolError:
            pass


def test_malformed_line_is_protocol_error():
    import pytest
    with pytest.raises(ProtocolError):
        decode(seed.stream_decoder(), [b'{"text": "abc\n'])
    with pytest.raises(ProtocolError):
        decode(openai.CHAT.stream_decoder(), [b"data: {not json\n\n"])


def test_implausible_token_counts_are_dropped_and_estimated():
    good = {"prompt_tokens": 12, "completion_tokens": 0}
    for usage, kept in [(good, good), ({"prompt_tokens": -100, "completion_tokens": -5}, None),
                        ({"prompt_tokens": True, "completion_tokens": False}, None),
                        ({"prompt_tokens": 10 ** 30, "completion_tokens": 7}, {"completion_tokens": 7}),
                        ({"prompt_tokens": 3.0, "completion_tokens": "4"}, None), ({}, None)]:
        assert seed.parse_reply({"output": "x", "usage": usage}).usage == kept
        assert openai.CHAT.parse_reply({"choices": [{"message": {"content": "x"}}], "usage": usage}).usage == kept


def test_unpaired_surrogates_become_replacement_characters():
    line = b'{"text": "bad \\ud800 end", "model": "m\\udfff"}\n{"text": "", "finish_reason": "stop"}\n'
    chunks = decode(seed.stream_decoder(), [line])
    assert chunks[0].text == "bad \ufffd end" and chunks[0].model == "m\ufffd"
    pair = seed.parse_reply(json.loads('{"output": "ok \\ud83d\\ude00"}'))  # a proper pair is one character
    assert pair.text == "ok \U0001F600"
    err = decode(openai.CHAT.stream_decoder(), [b'data: {"error": {"message": "oops \\udc80"}}\n\n'])[0]
    assert err.error == "oops \ufffd"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=8), st.integers() | st.booleans() | st.floats() | st.none(),
       st.integers() | st.booleans() | st.none())
def test_parsed_chunks_are_safe_to_show_and_store(text, prompt_tokens, completion_tokens):
    obj = {"output": text, "model": text, "usage": {"prompt_tokens": prompt_tokens,
                                                   "completion_tokens": completion_tokens}}
    chunk = seed.parse_reply(json.loads(json.dumps(obj)))
    (chunk.text + chunk.model).encode("utf-8")  # no lone surrogate left
    for value in (chunk.usage or {}).values():
        assert type(value) is int and 0 <= value <= 10 ** 9
