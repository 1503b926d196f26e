"""The parameter table and what is built from it: the magic's options and traits, validation, the merge of
cell options over %config, compare's settings, the panel's "To cell" options, the one text table."""
from __future__ import annotations

from argparse import Namespace
from types import SimpleNamespace

import pytest

from nb_model import params, textwidth
from nb_model.errors import ConfigError
from nb_model.magics import NbModel

PROFILE = SimpleNamespace(name="p", max_tokens_cap=100)


def test_every_option_of_the_table_is_an_option_of_the_magic_with_its_help_and_type():
    parser = NbModel.generate.parser
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    for row in params.OPTIONS:
        for flag in row.flags:
            action = by_flag[flag]
            assert action.dest == row.name and action.help == row.help
            if row.kind in (int, float):
                assert action.type is row.kind
    assert list(by_flag["--format"].choices) == list(params.FORMATS)


def test_the_magic_has_one_config_trait_per_row_with_a_trait():
    traits = NbModel.class_traits(config=True)
    assert set(traits) == set(params.TRAITS)
    assert traits["temperature"].help == "Default temperature." and traits["format"].default_value == "text"


@pytest.mark.parametrize("bad, message", [
    ({"max_tokens": 101}, "max_tokens must be an integer from 1 to 100 (profile 'p'), got 101"),
    ({"max_tokens": True}, "max_tokens must be an integer"),
    ({"temperature": 2.5}, "temperature must be between 0 and 2, got 2.5"),
    ({"top_p": 0}, "top_p must be in (0, 1], got 0"),
    ({"top_k": 0}, "top_k must be a positive integer, got 0"),
    ({"language": " "}, "language must be a non-empty code such as 'en' or 'fr'"),
    ({"response_format": {"schema": {}}}, "response_format must be an object with a 'type', e.g. {'type': "),
    ({"temprature": 1}, "unknown parameter(s) temprature; allowed: max_tokens, temperature, top_p"),
])
def test_validate_params_says_what_is_allowed_in_one_line(bad, message):
    with pytest.raises(ConfigError) as err:
        params.validate_params(bad, PROFILE)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_validate_params_drops_unset_and_keeps_valid_values():
    given = {"max_tokens": 100, "temperature": 0, "top_p": 1, "top_k": 3, "language": "zh", "seed": 7,
             "response_format": {"type": "json_object"}, "system": None}
    assert params.validate_params(given, PROFILE) == {k: v for k, v in given.items() if v is not None}


def test_the_first_bad_parameter_in_table_order_is_reported():
    with pytest.raises(ConfigError, match="^temperature"):
        params.validate_params({"top_p": 5, "temperature": 5}, PROFILE)


def test_cell_options_win_over_config_which_win_over_nothing():
    configured = SimpleNamespace(profile="a", model="m", max_tokens=50, temperature=0.2, top_p=None, top_k=None,
                                 language="fr", system="be brief", format="markdown", stream=True)
    args = Namespace(profile=None, model="m2", max_tokens=None, temperature=0.9, top_p=None, top_k=None,
                     language=None, seed=3, system=None, format=None, no_stream=True, cache="refresh")
    s = params.cell_settings(args, configured)
    assert (s.profile, s.model, s.system, s.format, s.stream, s.cache) == ("a", "m2", "be brief", "markdown",
                                                                          False, "refresh")
    assert s.params == {"max_tokens": 50, "temperature": 0.9, "top_p": None, "top_k": None, "language": "fr",
                        "seed": 3}
    assert s.call() == {"profile": "a", "model": "m2", "system": "be brief", "cache": "refresh", "max_tokens": 50,
                        "temperature": 0.9, "language": "fr", "seed": 3}


def test_merge_takes_the_first_layer_that_sets_a_name():
    assert params.merge({"a": None, "b": 0}, {"a": 1, "b": 2, "c": 3}, None) == {"a": 1, "b": 0, "c": 3}
    assert params.merge({"a": 1}, {"b": 2}, names=("b", "z")) == {"b": 2, "z": None}


def test_compare_settings_come_from_the_table():
    from nb_model import compare
    assert compare.SETTINGS is params.SETTINGS and compare.TEXTS == ("system", "prompt")
    assert params.SETTINGS["top_k"] is int and params.SETTINGS["temperature"] is float
    assert compare.parse_compare("top_k=1,2; system=a, b|c") == [
        {"top_k": 1, "system": "a, b"}, {"top_k": 1, "system": "c"}, {"top_k": 2, "system": "a, b"},
        {"top_k": 2, "system": "c"}]
    with pytest.raises(ConfigError, match="name one of temperature, top_p, top_k, max_tokens, seed, language, "
                                          "model, profile, system, prompt"):
        compare.parse_compare("nope=1,2")


def test_cell_options_of_panel_knobs():
    knobs = {"profile": "env", "model": None, "temperature": 0.4, "top_p": 1.0, "top_k": None, "max_tokens": 25,
             "language": "fr", "system": "Be brief."}
    assert params.cell_options(knobs) == ["-p", "env", "-t", "0.4", "--top-p", "1", "--max-tokens", "25",
                                          "--language", "fr", "-s", "Be brief."]


def test_one_table_aligns_by_display_width_without_trailing_spaces():
    text = textwidth.table([("名前", "x", ""), ("ab", "yy", "z")])
    assert text.splitlines() == ["名前  x", "ab    yy  z"]
    assert textwidth.table([]) == ""


def test_the_panel_refuses_values_outside_its_knobs_in_one_line():
    from nb_model.panel import Panel
    with pytest.raises(ConfigError, match=r"^the panel's knobs take top_p from 0.05 and top_k up to 1000, "
                                          r"got top_p=0.01, top_k=None$"):
        Panel("hi", top_p=0.01)
