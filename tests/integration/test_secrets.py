"""Keys and credentials never appear in outputs, errors, reprs, caches or logs."""

import nb_model
import pytest
from nb_model.errors import APIError, ConfigError

from conftest import notices, run
from helpers.client import client
from helpers.new_kernel import text_of


def test_key_sent_as_bearer_and_never_in_errors(keyed_sandbox, monkeypatch):
    key = "sk-test-" + "k" * 24
    c = client(keyed_sandbox)
    with pytest.raises(APIError) as info:
        c.generate("hi", max_tokens=5)
    assert info.value.status == 401 and "MODEL_API_KEY" in str(info.value) and key not in str(info.value)
    monkeypatch.setenv("MODEL_API_KEY", key)
    assert c.generate("hi", max_tokens=5).text
    assert key not in repr(c.profile) and key not in str(c.profile.summary())


def test_endpoint_credentials_stay_out_of_the_endpoint_error():
    with pytest.raises(ConfigError) as info:
        nb_model.add_profile("bad", endpoint="localhost:8000?api_key=SECRET123")
    assert "SECRET123" not in str(info.value)


@pytest.mark.parametrize("key", ["sk-abc\ndef", "sk-clé-1234", "sk-abc def", "sk-abc\tdef"])
def test_a_key_that_cannot_go_in_a_header_is_refused_unseen(keyed_sandbox, monkeypatch, key):
    monkeypatch.setenv("MODEL_API_KEY", key)
    retries = []
    with pytest.raises(ConfigError) as info:
        client(keyed_sandbox).generate("hi", max_tokens=5, on_retry=retries.append)
    line = str(info.value)
    assert line == "the key in $MODEL_API_KEY contains characters not allowed in an HTTP header: set it again"
    assert retries == [] and keyed_sandbox.stats()["requests"] == 0
    monkeypatch.setenv("MY_KEY", "  sk-test-" + "k" * 24 + "\n")  # spaces around it are trimmed: fine
    assert client(keyed_sandbox, key_env="MY_KEY").generate("hi", max_tokens=5).text


SECRET = "S3CRETPASS-0123456789"


def test_endpoint_credentials_never_shown(shell):
    nb_model.add_profile("creds", endpoint=f"http://user:{SECRET}@127.0.0.1:9", max_retries=0)
    res, cap = run(shell, "%%generate -p creds -o g\nhello")
    assert not res.success and "connection refused" in text_of(cap)
    seen = text_of(cap)
    for line in ("%generate profiles", "%config NbModel.profile = 'creds'", "%generate config"):
        seen += text_of(run(shell, line)[1])
    run(shell, "%config NbModel.profile = None")
    assert SECRET not in seen and SECRET not in (shell.user_ns["g"].error or "")
    assert "talking to 127.0.0.1:9 " in text_of(cap)  # the error names host and port, never the credentials
    assert seen.count("//***@127.0.0.1:9") >= 2  # %generate profiles and config show the endpoint redacted


def test_redis_url_password_in_query_is_redacted(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("NB_MODEL_CACHE_URL", f"redis://127.0.0.1:9/0?password={SECRET}")
    res, cap = run(shell, "%%generate --max-tokens 5\nhello")
    assert res.success and len(notices(cap)) == 1
    assert SECRET not in text_of(cap) and "password=***" in text_of(cap)


def test_endpoint_credentials_stay_out_of_repr_and_cache(sandbox, monkeypatch, tmp_path):
    from nb_model.cache.keys import cache_key
    from nb_model.client import Client, client_for
    from nb_model.config import Profile
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    url = sandbox.url.replace("http://", f"http://user:{SECRET}@")
    prof = nb_model.add_profile("creds", endpoint=url)
    assert SECRET not in repr(prof) and "'http://***@127.0.0.1:" in repr(prof)
    assert not nb_model.generate("hello", profile="creds", max_tokens=5).cached
    assert nb_model.generate("hello", profile="creds", max_tokens=5).cached
    assert client_for(prof) is not client_for(Profile("creds", url.replace(SECRET, "other")))  # repr alike
    for path in tmp_path.glob("cache.sqlite*"):
        assert SECRET.encode() not in path.read_bytes()
    # a URL without credentials keeps the cache key it always had (existing caches stay valid)
    c = Client(Profile("k", "http://127.0.0.1:8000/v1/generate", "openai", "m1"))
    key = cache_key(c.identity(c.spec("hello", max_tokens=5, temperature=0.2)))
    assert key == "230069dbb2df8b4f219ee7c7250de29ebfcee0185e44700f24f886f5cea28178"
