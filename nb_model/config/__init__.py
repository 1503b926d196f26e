"""Profiles and settings resolution.

Order, strongest first: call arguments > cell options > %config > env vars >
profiles TOML > built-in defaults. A profile names the *environment variable*
holding its key; the key itself is read at request time and never stored.

`profiles` holds the `Profile` and its checks; `env` finds the profiles the environment offers (the
Jupyter relay, a JupyterHub relay service, the local model); this module puts them together.
"""
from __future__ import annotations

import os
from dataclasses import replace

from ..errors import ConfigError
from ..params import PARAMS, validate_params
from . import env
from .profiles import (BUILTIN, EMBEDDED_PREFIX, ENDPOINT_EXAMPLE, KEY_ENVS, SEED_PRICE_PER_1M, URL_SCHEMES,
                       Profile, _FIELD_TYPES, _parse_toml, _typed, check_endpoint, profile_from_dict, profiles_path,
                       redact_url)

__all__ = ["BUILTIN", "EMBEDDED_PREFIX", "ENDPOINT_EXAMPLE", "KEY_ENVS", "PARAMS", "SEED_PRICE_PER_1M", "URL_SCHEMES",
           "Profile", "add_profile", "check_endpoint", "default_profile_name", "ignored_env_note", "load_profiles",
           "profile_from_dict", "profiles_path", "redact_url", "resolve_profile", "set_session_profile",
           "validate_params"]

def _env_profile() -> Profile | None:
    endpoint = (os.environ.get("NB_MODEL_ENDPOINT") or "").strip()
    if not endpoint:
        return None
    check_endpoint("$NB_MODEL_ENDPOINT", endpoint)
    protocol = os.environ.get("NB_MODEL_PROTOCOL", "seed")
    return profile_from_dict("env", {
        "endpoint": endpoint, "protocol": protocol, "model": os.environ.get("NB_MODEL_MODEL"),
        "price_per_1m": SEED_PRICE_PER_1M if protocol == "seed" else 0.0,
        "description": "from NB_MODEL_ENDPOINT / NB_MODEL_PROTOCOL / NB_MODEL_MODEL",
    })


def ignored_env_note() -> str:
    """' (NB_MODEL_MODEL is set but NB_MODEL_ENDPOINT is not: it is ignored)' or "", for fallback notices."""
    if (os.environ.get("NB_MODEL_ENDPOINT") or "").strip():
        return ""
    names = [n for n in ("NB_MODEL_MODEL", "NB_MODEL_PROTOCOL", *KEY_ENVS) if os.environ.get(n)]
    if not names:
        return ""
    if len(names) == 1:
        return f" ({names[0]} is set but NB_MODEL_ENDPOINT is not: it is ignored)"
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    return f" ({listed} are set but NB_MODEL_ENDPOINT is not: they are ignored)"


_session_profiles: dict[str, Profile] = {}


def add_profile(name: str, **settings) -> Profile:
    """Define a profile for this session only (same settings as a [profiles.NAME] table)."""
    profile = profile_from_dict(name, settings)
    _session_profiles[name] = profile
    return profile


_env_error: ConfigError | None = None  # why $NB_MODEL_ENDPOINT & co. make no profile (set by load_profiles)


def load_profiles() -> tuple[dict[str, Profile], str | None]:
    """All profiles (built-in, env, relay, file, added this session) and the file's `default`, if any."""
    profiles = dict(BUILTIN)
    extra = _extra_profiles()
    profiles.update(extra)
    global _env_error
    try:
        env, _env_error = _env_profile(), None
    except ConfigError as exc:  # raised when the env profile is wanted (resolve_profile), not for every profile
        env, _env_error = None, exc
    if env:
        profiles["env"] = env
    default = None
    path = profiles_path()
    if path is not None:
        data = _parse_toml(path)
        default = data.get("default")
        for name, body in (data.get("profiles") or {}).items():
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: [profiles.{name}] must be a table")
            profiles[name] = profile_from_dict(name, body)
    profiles.update(_session_profiles)
    return profiles, default


def _extra_profiles() -> dict[str, Profile]:
    """Profiles that exist because of the environment: the Jupyter relay, a JupyterHub relay service, a local
    model (see `env`)."""
    out: dict[str, Profile] = dict(env.relay_profiles())
    if os.environ.get(env.HUB_TOKEN_ENV):  # a JupyterHub server: its relay service, if there is one
        out.update(env.hub_profiles())
    local = env.local_profile()
    if local:
        out[local.name] = local
    return out


def default_profile_name(profiles: dict[str, Profile], file_default: str | None) -> str:
    """NB_MODEL_PROFILE > profiles file default > env endpoint > Hub relay service > relay > local model > sandbox."""
    chosen = os.environ.get("NB_MODEL_PROFILE") or file_default
    if chosen:
        return chosen
    for name in ("env",):
        if name in profiles:
            return name
    relay = sorted(n for n in profiles if n.startswith("hub:")) or sorted(
        n for n in profiles if n.startswith("relay:"))
    if relay:
        return relay[0]
    if "local" in profiles:
        return "local"
    return "sandbox"


_session_profile: str | None = None


def set_session_profile(name: str | None) -> None:
    """The default profile of this kernel (`%config NbModel.profile = ...`), for every front end."""
    global _session_profile
    _session_profile = name or None


def resolve_profile(name: str | None = None, **overrides) -> Profile:
    profiles, file_default = load_profiles()
    chosen = name or _session_profile or os.environ.get("NB_MODEL_PROFILE") or file_default
    if _env_error is not None and chosen in (None, "env"):  # a broken $NB_MODEL_ENDPOINT was meant to be used
        raise _env_error
    name = chosen or default_profile_name(profiles, file_default)
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}: available {', '.join(sorted(profiles))} "
                          f"(define more in {profiles_path() or 'nb_model.toml'})")
    profile = profiles[name]
    overrides = {k: _typed(f"profile {name!r}", k, v) if k in _FIELD_TYPES else v for k, v in overrides.items() if v is not None}
    return replace(profile, **overrides) if overrides else profile
