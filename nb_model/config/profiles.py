"""Profiles: where and how to call a model (`Profile`), read from dicts and TOML with one-line errors.

The foundation of `nb_model.config`: no environment discovery here (see `env`), nothing above it imported.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..protocols import PROTOCOLS

KEY_ENVS = ("NB_MODEL_API_KEY", "MODEL_API_KEY")
SEED_PRICE_PER_1M = 12.0


_SECRET_QUERY = re.compile(r"([?&](?:password|pass|passwd|key|api_key|apikey|token|secret)=)[^&#]*", re.I)


def redact_url(url: str) -> str:
    """The URL without credentials (user:password@ or ?password=/token=/key= values), for outputs."""
    return _SECRET_QUERY.sub(r"\1***", re.sub(r"//[^@/?#]*@", "//***@", url))


URL_SCHEMES = ("http", "https")
EMBEDDED_PREFIX = "embedded:"  # endpoint "embedded:ENGINE": an in-kernel sandbox (see client.embedded_sandbox)
ENDPOINT_EXAMPLE = "http://127.0.0.1:8000/v1/generate"


def check_endpoint(where: str, endpoint: str) -> str:
    """`endpoint` if it is an http(s) URL with a host (or embedded:ENGINE), else one ConfigError line."""
    if endpoint.startswith(EMBEDDED_PREFIX):
        return endpoint
    problem = None
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme.lower() not in URL_SCHEMES:
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it has no host"
        elif any(c.isspace() for c in endpoint):
            problem = "it contains spaces"
    if problem:
        raise ConfigError(f"{where}: endpoint {redact_url(endpoint)!r} is not a URL ({problem}): "
                          f"write e.g. {ENDPOINT_EXAMPLE!r}")
    return endpoint


@dataclass(frozen=True)
class Profile:
    """Where and how to call a model. Holds no secret, only the key's env var name."""

    name: str
    endpoint: str | None = None  # None: the embedded sandbox, started on first use
    protocol: str = "seed"
    model: str | None = None
    key_env: str | None = None  # None: NB_MODEL_API_KEY then MODEL_API_KEY
    max_tokens_cap: int = 2048
    context_window: int = 16384
    qps: float = 20.0
    price_per_1m: float = 0.0
    max_retries: int = 2
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    cache_url: str | None = None  # redis://… to share the cache and the rate limit (else SQLite, per process)

    def key_envs(self) -> tuple[str, ...]:
        return (self.key_env,) if self.key_env else KEY_ENVS

    def api_key(self) -> str | None:
        """The key from the environment (never cached on the object)."""
        return self.key_source()[1]

    def key_status(self) -> str:
        name, _ = self.key_source()
        if name:
            return f"set (from ${name})"
        return f"unset (looked in ${', $'.join(self.key_envs())})"

    def key_source(self) -> tuple[str | None, str | None]:
        """(env var name, key) of the key in use, (None, None) when unset."""
        for name in self.key_envs():
            value = os.environ.get(name)
            if value:
                return name, value.strip()
        return None, None

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("endpoint", "cache_url"):
            if shown[name]:
                shown[name] = redact_url(shown[name])
        return f"Profile({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def summary(self) -> dict[str, Any]:
        info = {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}
        info["endpoint"] = redact_url(self.endpoint) if self.endpoint else "embedded sandbox (started on first use)"
        info["key"] = self.key_status()
        if self.cache_url:
            info["cache_url"] = redact_url(self.cache_url)
        return info


BUILTIN: dict[str, Profile] = {
    "sandbox": Profile(
        "sandbox", None, "seed", "sandbox", price_per_1m=SEED_PRICE_PER_1M,
        description="embedded simulated engine; cost shown at the seed API's price",
    ),
}

_FIELD_NAMES = {f.name for f in fields(Profile)}
_FIELD_TYPES = {"endpoint": str, "protocol": str, "model": str, "key_env": str, "max_tokens_cap": int,
                "context_window": int, "qps": float, "price_per_1m": float, "max_retries": int,
                "connect_timeout": float, "read_timeout": float, "defaults": dict, "description": str,
                "cache_url": str}
_OPTIONAL = {"endpoint", "model", "key_env", "cache_url"}
_POSITIVE = {"max_tokens_cap", "context_window", "connect_timeout", "read_timeout"}
_NOT_NEGATIVE = {"qps", "price_per_1m", "max_retries"}


def _parse_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read profiles file {path}: {exc}") from None


def profiles_path() -> Path | None:
    """NB_MODEL_CONFIG, else ./nb_model.toml, else ~/.config/nb_model/profiles.toml."""
    env = os.environ.get("NB_MODEL_CONFIG")
    if env:
        return Path(env).expanduser()
    for candidate in (Path("nb_model.toml"), Path.home() / ".config" / "nb_model" / "profiles.toml"):
        if candidate.is_file():
            return candidate
    return None


def profile_from_dict(name: str, data: dict, *, where: str | None = None) -> Profile:
    """A checked `Profile` from its settings, else one ConfigError line starting with `where` (default
    "profile NAME"). Every reader of profiles (TOML, env, relays, the relay server's own config) uses it."""
    where = where or f"profile {name!r}"
    if "key" in data or "api_key" in data:
        raise ConfigError(f"{where} holds a key: remove it and set key_env = \"ENV_VAR_NAME\" instead")
    unknown = set(data) - _FIELD_NAMES
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(_FIELD_NAMES - {'name'}))}")
    protocol = data.get("protocol", "seed")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}: protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
    return Profile(name=name, **{k: _typed(where, k, v) for k, v in data.items()})


def _typed(where: str, field: str, value):
    """A profile setting converted to its field's type and checked, or one ConfigError line (`where`: e.g.
    "profile 'mine'")."""
    kind = _FIELD_TYPES[field]
    if value is None and field in _OPTIONAL:
        return None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    elif not (kind is int and isinstance(value, int) and not isinstance(value, bool)
              or kind in (str, dict) and isinstance(value, kind)):
        what = {float: "a number", int: "an integer", str: "a string", dict: "a table"}[kind]
        raise ConfigError(f"{where}: {field} must be {what}, got {value!r}")
    if field in _POSITIVE and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{where}: {field} must be above 0, got {value!r}")
    if field in _NOT_NEGATIVE and not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{where}: {field} must be 0 or more, got {value!r}")
    if field == "endpoint":
        check_endpoint(where, value)
    return value
