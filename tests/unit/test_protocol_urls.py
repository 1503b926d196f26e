"""Where each protocol sends its requests (`url_for`), from an endpoint or from a profile; the client and
the relay both ask the adapter."""
import pytest

from nb_model.config import profile_from_dict
from nb_model.errors import ConfigError
from nb_model.protocols import adapter
from nb_model.server.relay import parse_profile


@pytest.mark.parametrize("protocol, endpoint, url", [
    ("seed", "https://api.example.com", "https://api.example.com/v1/generate"),
    ("seed", "https://api.example.com/", "https://api.example.com/v1/generate"),
    ("seed", "https://api.example.com/api/v1/generate", "https://api.example.com/api/v1/generate"),
    ("openai", "https://api.example.com", "https://api.example.com/v1/chat/completions"),
    ("openai", "https://api.example.com/v1/", "https://api.example.com/v1/chat/completions"),
    ("openai", "https://api.example.com/v1/chat/completions", "https://api.example.com/v1/chat/completions"),
    ("openai-completions", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/completions"),
    ("openai-completions", "http://127.0.0.1:8080/v1/chat/completions", "http://127.0.0.1:8080/v1/completions"),
])
def test_url_for_an_endpoint_or_a_profile(protocol, endpoint, url):
    assert adapter(protocol).url_for(endpoint) == url
    profile = profile_from_dict("p", {"endpoint": endpoint, "protocol": protocol})
    assert adapter(protocol).url_for(profile) == url


def test_url_for_needs_an_endpoint():
    with pytest.raises(ConfigError, match="no endpoint"):
        adapter("seed").url_for(profile_from_dict("p", {}))


def test_the_relay_asks_the_adapter_for_its_upstream():
    chat = parse_profile("c", {"endpoint": "https://api.example.com/v1", "protocol": "openai"})
    assert chat.upstream("v1/chat/completions") == ("https://api.example.com/v1/chat/completions", "openai")
    assert chat.upstream("v1/completions") == ("https://api.example.com/v1/completions", "openai-completions")
    assert chat.upstream("v1/generate") is None
