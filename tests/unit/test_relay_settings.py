"""Relay settings without a server: kernel-side profiles, profile checks, upstream URLs, log redaction."""
from __future__ import annotations

import json

import pytest

from nb_model.errors import ConfigError
from nb_model.config.env import PROFILES_ENV, TOKEN_ENV, URL_ENV, relay_profiles
from nb_model.server.redact import redact
from nb_model.server.relay import BadRequest, parse_profile


def test_no_relay_outside_jupyter(monkeypatch):
    monkeypatch.setenv(PROFILES_ENV, json.dumps({"a": {"protocol": "seed"}}))
    assert relay_profiles() == {}  # no URL / token: not under a relay
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:8888/nb-model/relay/")
    assert relay_profiles() == {}


def test_relay_profiles_from_environment(monkeypatch):
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:8888/user/ada/nb-model/relay")
    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    monkeypatch.setenv(PROFILES_ENV, json.dumps({"course 1": {"protocol": "openai", "model": "m", "qps": 2.0,
                                                              "endpoint": "ignored", "key_env": "IGNORED"}}))
    (name, prof), = relay_profiles().items()
    assert name == prof.name == "relay:course 1"
    assert prof.endpoint == "http://127.0.0.1:8888/user/ada/nb-model/relay/course%201"
    assert (prof.protocol, prof.model, prof.qps, prof.key_env) == ("openai", "m", 2.0, TOKEN_ENV)
    assert prof.api_key() == "t0ken"


def test_broken_profiles_variable_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:8888/nb-model/relay/")
    monkeypatch.setenv(TOKEN_ENV, "t")
    monkeypatch.setenv(PROFILES_ENV, "[1, 2")
    with pytest.raises(ConfigError, match=r"NB_MODEL_RELAY_PROFILES is not valid relay JSON .*unset"):
        relay_profiles()


@pytest.mark.parametrize("data, message", [
    ({"endpoint": "https://x", "api_key": "sk-1"}, "api_key is not a setting"),
    ({"endpoint": "https://x", "key": "sk-1", "key_env": "K"}, "give one of key_env, key, not several"),
    ({"endpoint": "https://x", "key_file": ""}, "key_file must be a non-empty string"),
    ({"endpoint": "https://x", "max_tokens_cap": "100"}, "max_tokens_cap must be an integer"),
    ({"endpoint": "https://x", "max_tokens_cap": 0}, "max_tokens_cap must be above 0"),
    ({"endpoint": "ftp://x"}, "must start with http:// or https://"),
    ({"endpoint": "embedded:sandbox"}, "endpoint must be an http"),
    ({"endpoint": "https://x", "price_per_1m": -1}, "price_per_1m must be 0 or more"),
    ({"endpoint": "https://x", "protocol": "grpc"}, "protocol 'grpc' unknown"),
    ({"endpoint": "https://x", "temperature": 1}, "unknown setting"),
    ("https://x", "must be a dict"),
])
def test_bad_profile_settings(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_profile("p", data)
    with pytest.raises(ConfigError, match="letters, digits"):
        parse_profile("a/b", {"endpoint": "https://x"})


def test_key_sources_are_named_never_held():
    filed = parse_profile("f", {"endpoint": "https://x", "key_file": "/run/keys/f"})
    literal = parse_profile("l", {"endpoint": "https://x", "key": "sk-literal-123456"})
    assert (filed.key_file, filed.keyed, literal.key_in_config, literal.keyed) == ("/run/keys/f", True, True, True)
    assert "sk-literal-123456" not in repr(literal) and not parse_profile("n", {"endpoint": "https://x"}).keyed


def test_shape_forces_model_caps_tokens_and_reserves():
    prof = parse_profile("p", {"endpoint": "https://x", "protocol": "openai", "model": "small", "max_tokens_cap": 50})
    chat = {"model": "big", "messages": [{"role": "user", "content": "one two"}]}
    body, reserve = prof.shape(json.dumps(chat).encode())
    assert json.loads(body)["model"] == "small" and json.loads(body)["max_tokens"] == 50 and reserve == 50 + 2 + 4 + 3  # + message and reply framing
    body, reserve = prof.shape(b'{"prompt": "abcdefgh abcdefgh", "max_completion_tokens": 10, "n": 1}')
    assert json.loads(body)["max_completion_tokens"] == 10 and reserve == 10 + 4
    for raw, message in [(b'{"max_tokens": 51}', "use at most 50"), (b'{"max_tokens": true}', "positive integer"),
                         (b'{"n": 2}', "one completion per request"), (b"[1]", "JSON object"), (b"", "JSON object"),
                         (b"\xff", "not valid JSON")]:
        with pytest.raises(BadRequest, match=message):
            prof.shape(raw)
    free = parse_profile("q", {"endpoint": "https://x"})  # no model, no cap: passed as given
    assert json.loads(free.shape(b'{"prompt": "hi", "model": "m"}')[0]) == {"prompt": "hi", "model": "m"}


def test_upstream_urls_follow_the_protocol_adapters():
    chat = parse_profile("c", {"endpoint": "https://api.example.com/v1", "protocol": "openai"})
    assert chat.upstream("v1/chat/completions") == ("https://api.example.com/v1/chat/completions", "openai")
    assert chat.upstream("v1/completions") == ("https://api.example.com/v1/completions", "openai-completions")
    assert chat.upstream("v1/generate") is None and chat.upstream("v1/files") is None
    seed = parse_profile("s", {"endpoint": "https://seed.example.com/api/v1/generate"})
    assert seed.upstream("v1/generate") == ("https://seed.example.com/api/v1/generate", "seed")
    assert seed.upstream("v1/chat/completions") is None


@pytest.mark.parametrize("endpoint, remote", [
    ("http://127.0.0.1:8000", False), ("http://localhost:8000/v1", False), ("http://[::1]:80", False),
    ("https://10.0.0.5", False), ("http://10.0.0.5:8000", True), ("http://api.example.com", True),
])
def test_plain_http_remote(endpoint, remote):
    assert parse_profile("p", {"endpoint": endpoint}).plain_http_remote() is remote


def test_redact_authorization_bearer_and_secrets():
    assert redact("Authorization: Bearer sk-abcdef123456") == "Authorization: ***"
    assert redact('{"authorization": "token abc12345"}') == '{"authorization": "***"}'
    assert redact("sent Bearer abcdefgh12345678 upstream") == "sent Bearer *** upstream"
    assert redact("the key is s3cr3t-value!", ["s3cr3t-value"]) == "the key is ***!"
    assert redact("token-authenticated request from 127.0.0.1") == "token-authenticated request from 127.0.0.1"


def test_redact_keeps_help_text_that_names_a_variable():
    """A one-line hint such as 'send Authorization: Bearer $VAR' names a variable, not a secret: kept."""
    hint = "not authenticated: send 'Authorization: Bearer $JUPYTERHUB_API_TOKEN' (set in every kernel)"
    assert redact(hint) == hint
    assert redact("Authorization: token $NB_MODEL_RELAY_TOKEN") == "Authorization: token $NB_MODEL_RELAY_TOKEN"
    assert redact("Authorization: Bearer $ecret-with-dollar123") == "Authorization: ***"  # not a variable name
    assert redact("Authorization: Bearer sk-abc123$X") == "Authorization: ***"
