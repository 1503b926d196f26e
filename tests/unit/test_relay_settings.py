"""Relay settings without a server: kernel-side profiles, profile checks, upstream URLs, log redaction."""
from __future__ import annotations

import json

import pytest

from nb_model.errors import ConfigError
from nb_model.relay_env import PROFILES_ENV, TOKEN_ENV, URL_ENV, relay_profiles
from nb_model.server.redact import redact
from nb_model.server.relay import parse_profile


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
    ({"endpoint": "https://x", "key": "sk-1"}, "holds a key"),
    ({"endpoint": "ftp://x"}, "endpoint must be an http"),
    ({"endpoint": "https://x", "protocol": "grpc"}, "protocol 'grpc' unknown"),
    ({"endpoint": "https://x", "temperature": 1}, "unknown setting"),
    ("https://x", "must be a dict"),
])
def test_bad_profile_settings(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_profile("p", data)
    with pytest.raises(ConfigError, match="letters, digits"):
        parse_profile("a/b", {"endpoint": "https://x"})


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
