"""Profiles, %config, config files and their validation: settings are refused where they are set."""

import math

import nb_model
import pytest
from nb_model.config import resolve_profile
from nb_model.errors import ConfigError

from conftest import run
from helpers.new_kernel import text_of


# -- settings that can never work: one ConfigError line, nothing sent, no retry ---------------------------
@pytest.mark.parametrize("endpoint", ["localhost:8000", "not a url", "ftp://example.com/v1", "http://", "http://h:99x"])
def test_endpoint_that_is_not_an_http_url_is_refused_where_it_is_set(endpoint, monkeypatch, tmp_path):
    with pytest.raises(ConfigError) as info:
        nb_model.add_profile("bad", endpoint=endpoint)
    line = str(info.value)
    assert line.startswith("profile 'bad': endpoint") and "http://127.0.0.1:8000/v1/generate" in line
    assert "\n" not in line
    (tmp_path / "nb_model.toml").write_text(f'[profiles.file]\nendpoint = "{endpoint}"\n')
    with pytest.raises(ConfigError, match="profile 'file': endpoint"):
        nb_model.generate("hi", profile="file")
    (tmp_path / "nb_model.toml").unlink()
    monkeypatch.setenv("NB_MODEL_ENDPOINT", endpoint)
    with pytest.raises(ConfigError, match=r"^\$NB_MODEL_ENDPOINT: endpoint .* is not a URL"):
        nb_model.generate("hi")


@pytest.mark.parametrize("setting, value, words", [
    ("read_timeout", -1, "read_timeout must be above 0, got -1"),
    ("connect_timeout", 0, "connect_timeout must be above 0"),
    ("max_tokens_cap", 0, "max_tokens_cap must be above 0, got 0"),
    ("context_window", -5, "context_window must be above 0"),
    ("qps", -1, "qps must be 0 or more, got -1"),
    ("qps", float("nan"), "qps must be 0 or more"),
    ("max_retries", -1, "max_retries must be 0 or more, got -1"),
    ("price_per_1m", -0.5, "price_per_1m must be 0 or more"),
])
def test_profile_numbers_out_of_range_are_refused_at_load(setting, value, words, tmp_path):
    with pytest.raises(ConfigError) as info:
        nb_model.add_profile("odd", endpoint="http://127.0.0.1:9", **{setting: value})
    assert str(info.value).startswith("profile 'odd': " + words) and "\n" not in str(info.value)
    if not math.isnan(value):  # TOML spells NaN differently
        (tmp_path / "nb_model.toml").write_text(f'[profiles.odd]\nendpoint = "http://127.0.0.1:9"\n{setting} = {value}\n')
        with pytest.raises(ConfigError, match="profile 'odd': " + words.split(",")[0]):
            nb_model.generate("hi", profile="odd")
    with pytest.raises(ConfigError, match=words.split(",")[0]):
        resolve_profile("sandbox", **{setting: value})
    nb_model.add_profile("free", endpoint="http://127.0.0.1:9", qps=0, max_retries=0, price_per_1m=0)


def test_config_defaults_and_subcommands(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    run(shell, "%config NbModel.temperature = 0.0")
    run(shell, "%config NbModel.max_tokens = 7")
    try:
        res, cap = run(shell, "%%generate -o g\nhello")
        assert shell.user_ns["g"].params == {"max_tokens": 7, "temperature": 0.0}
        monkeypatch.setenv("MODEL_API_KEY", "secret-value-123456")
        _, cap = run(shell, "%generate config")
        assert "set (from $MODEL_API_KEY)" in cap.stdout and "secret-value-123456" not in cap.stdout
        assert "%config NbModel.temperature" in cap.stdout
        _, cap = run(shell, "%generate profiles")
        assert "* env" in cap.stdout and "sandbox" in cap.stdout
        _, cap = run(shell, "%generate help")
        assert "%generate config" in cap.stdout
        res, cap = run(shell, "%generate nonsense")
        assert not res.success and "unknown subcommand" in cap.stderr
    finally:
        run(shell, "%config NbModel.temperature = None")
        run(shell, "%config NbModel.max_tokens = None")


def test_unknown_session_profile_is_refused_in_one_line(shell, sandbox, use_endpoint, caplog):
    """%config reports a refused value through logging (in a kernel: one stderr line)."""
    use_endpoint(sandbox)
    run(shell, '%config NbModel.profile = "local"')
    err = caplog.text
    assert "unknown profile 'local'" in err and "pip install 'nb_model[local]'" in err and "Traceback" not in err
    assert shell.magics_manager.registry["NbModel"].profile is None  # unchanged: cells still work
    res, cap = run(shell, "%%generate --max-tokens 3 -o g\nhello")
    assert res.success and shell.user_ns["g"].profile == "env"


def test_profile_from_a_config_file_is_taken_at_load(shell, sandbox, use_endpoint):
    """A config file may name a profile that exists only later (relay:…): loading never fails on it."""
    from traitlets.config import Config
    from nb_model.config import set_session_profile
    from nb_model.magics import NbModel
    use_endpoint(sandbox)
    config = Config()
    config.NbModel.profile = "relay:later"
    try:
        assert NbModel(shell=shell, config=config).profile == "relay:later"
        res, cap = run(shell, "%%generate --max-tokens 3\nhello")
        assert type(res.error_in_exec).__name__ == "UsageError" and "unknown profile 'relay:later'" in cap.stderr
    finally:
        set_session_profile(None)


def test_profiles_file_and_key_refusal(shell, sandbox, tmp_path, monkeypatch):
    cfg = tmp_path / "nb_model.toml"
    cfg.write_text(f'default = "mine"\n[profiles.mine]\nendpoint = "{sandbox.url}"\nprotocol = "openai-completions"\n'
                   'model = "sandbox"\nmax_tokens_cap = 100\n')
    res, cap = run(shell, "%%generate --max-tokens 101\nhi")
    assert "from 1 to 100 (profile 'mine')" in cap.stderr
    res, cap = run(shell, "%%generate --max-tokens 10 -o g\nhi")
    assert res.success and shell.user_ns["g"].profile == "mine"
    cfg.write_text('[profiles.bad]\nendpoint = "http://x"\nkey = "abc"\n')
    res, cap = run(shell, "%%generate -p bad\nhi")
    assert "holds a key" in cap.stderr and "abc" not in cap.stderr


def test_profile_defaults_apply_to_cells(shell, sandbox):
    import nb_model
    nb_model.add_profile("terse", endpoint=sandbox.url, defaults={"max_tokens": 6, "temperature": 0.0})
    res, cap = run(shell, "%%generate -p terse -o g\nhello")
    assert res.success and shell.user_ns["g"].params == {"max_tokens": 6, "temperature": 0.0}
    res, cap = run(shell, "%%generate -p terse --max-tokens 9 -o g\nhello")
    assert shell.user_ns["g"].params["max_tokens"] == 9


def test_profile_setting_of_wrong_type_is_one_line(shell, tmp_path):
    (tmp_path / "nb_model.toml").write_text('[profiles.odd]\nendpoint = "http://127.0.0.1:9"\nqps = "fast"\n')
    res, cap = run(shell, "%%generate -p odd\nhello")
    assert not res.success and "profile 'odd': qps must be a number, got 'fast'" in cap.stderr
    assert "Traceback" not in text_of(cap)
