"""The sandbox's structured answers: valid JSON of the schema's shape, values taken from the text."""
import json

import jsonschema
import pytest
import requests

from nb_model.sandbox import SandboxServer
from nb_model.sandbox.schema import answer, corrupt, from_response_format, in_prompt

SCHEMA = {"type": "object", "required": ["mood", "price", "item", "ok", "stars", "tags"],
          "properties": {"mood": {"enum": ["positive", "negative", "neutral"]},
                         "price": {"type": ["number", "null"]}, "item": {"type": "string"},
                         "ok": {"type": "boolean"}, "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                         "tags": {"type": "array", "items": {"type": "string"}}}}


@pytest.mark.parametrize("text, mood, price, stars", [
    ("I love the kettle, excellent for $20.", "positive", 20.0, 5),
    ("The kettle broke. Terrible, 15 euros wasted.", "negative", 15.0, 1),
    ("The kettle is white.", "neutral", None, 3),
])
def test_values_follow_the_text_and_validate(text, mood, price, stars):
    value = json.loads(answer(text, SCHEMA))
    jsonschema.validate(value, SCHEMA)
    assert (value["mood"], value["price"], value["stars"], value["item"]) == (mood, price, stars, "kettle")
    assert value["ok"] is (mood == "positive")


def test_schema_in_the_prompt_and_choices():
    prompt = "Review: the lamp is poor.\n\nReply with one JSON object matching this JSON Schema:\n" \
             + json.dumps(SCHEMA) + '\nFor example: {"mood": "positive", "price": 9.5}'
    schema, text = in_prompt(prompt)
    assert schema == SCHEMA and text == "Review: the lamp is poor.\n\n"
    assert json.loads(answer(prompt))["mood"] == "negative"  # the example's "positive" is not data
    assert json.loads(answer(prompt))["price"] is None
    assert answer("Answer with one word: positive, negative or neutral. I hate it.") == "negative"
    assert answer("Pick a colour (red/green/blue). The sky is blue.") == "blue"
    assert answer("Write a poem about rain.") is None


def test_response_format_forms_and_faults():
    assert from_response_format(None) is None and from_response_format({"type": "text"}) is None
    assert from_response_format({"type": "json_object"}) == {}
    assert from_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}) == SCHEMA
    with pytest.raises(ValueError, match="json_schema"):
        from_response_format({"type": "yaml"})
    good = answer("the pen", SCHEMA)
    noisy = corrupt(good, "json-noise")
    assert "```json" in noisy and ",}" in noisy
    with pytest.raises(ValueError):
        json.loads(corrupt(good, "json-invalid"))


def test_chat_wire_reads_response_format_over_http():
    with SandboxServer(qps=0) as server:
        url = server.url + "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "I love my new mug, $8."}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}
        reply = requests.post(url, json=body, timeout=10).json()
        value = json.loads(reply["choices"][0]["message"]["content"])
        assert value["mood"] == "positive" and value["price"] == 8.0 and value["item"] == "new mug"
        bad = requests.post(url, json={**body, "response_format": {"type": "xml"}}, timeout=10)
        assert bad.status_code == 400 and "response_format" in bad.json()["error"]["message"]
        server.inject("json-noise")
        noisy = requests.post(url, json=body, timeout=10).json()["choices"][0]["message"]["content"]
        assert noisy.startswith("Sure!") and "```json" in noisy
