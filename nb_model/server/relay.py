"""`NbModelRelay`: the relay's settings (traitlets, so `c.NbModelRelay.qps = 2` works) and state.

    c.NbModelRelay.profiles = {
        "course": {"endpoint": "https://api.example.com/v1", "protocol": "openai",
                   "model": "small-1", "key_env": "COURSE_API_KEY"},
    }
    c.NbModelRelay.qps = 2               # per user, requests per second (0: no limit)
    c.NbModelRelay.tokens_per_day = 200_000  # per user, prompt + completion (0: no limit)

Keys are read from the server's environment when the extension loads and, by
default, removed from it so kernels and terminals started later do not inherit
them. (A kernel runs as the same OS user as the server, so this keeps keys out
of notebooks and their outputs; it is not a wall against code that reads the
server's memory. For that, run the key-holding server under another account.)
"""
from __future__ import annotations

import getpass
import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from traitlets import Bool, Dict, Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from .. import protocols
from ..errors import ConfigError
from ..relay_env import CLIENT_FIELDS, PROFILES_ENV, TOKEN_ENV, URL_ENV
from .quotas import Quotas, open_store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# relay path -> the protocol whose adapter builds the upstream URL
PATH_PROTOCOL = {"v1/generate": "seed", "v1/chat/completions": "openai", "v1/completions": "openai-completions"}
FAMILY = {"seed": "seed", "openai": "openai", "openai-completions": "openai"}
HINTS = ("price_per_1m", "max_tokens_cap", "context_window", "description")
SETTINGS = {"endpoint", "protocol", "model", "key_env", *HINTS}


@dataclass(frozen=True)
class RelayProfile:
    """One upstream the relay serves. Holds the key's env var name, never the key."""

    name: str
    endpoint: str
    protocol: str = "seed"
    model: str | None = None
    key_env: str | None = None
    hints: dict[str, Any] = field(default_factory=dict)

    def upstream(self, path: str) -> tuple[str, str] | None:
        """(upstream URL, protocol) for a relay path, None if this profile does not serve it."""
        protocol = PATH_PROTOCOL.get(path.strip("/"))
        if protocol is None or FAMILY[protocol] != FAMILY[self.protocol]:
            return None
        url, _, _ = protocols.adapter(protocol).build(self.endpoint, None, protocols.Spec(prompt="-"), False)
        return url, protocol

    def plain_http_remote(self) -> bool:
        """True for an http:// endpoint off this machine (a key would cross the network in clear)."""
        parts = urlsplit(self.endpoint)
        return parts.scheme == "http" and not _loopback(parts.hostname or "")

    def public(self, qps: float) -> dict[str, Any]:
        """What kernels and `status` may see: no endpoint, no key."""
        info = {"protocol": self.protocol, "model": self.model, **self.hints}
        if qps > 0:
            info["qps"] = qps
        return {k: v for k, v in info.items() if k in CLIENT_FIELDS and v is not None}


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_profile(name: str, data: Any) -> RelayProfile:
    """Check one `NbModelRelay.profiles` entry; one-line ConfigError saying what to fix."""
    where = f"NbModelRelay.profiles[{name!r}]"
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: a profile name uses letters, digits, '_', '.', '-' only")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a dict with endpoint, protocol, model, key_env")
    if "key" in data or "api_key" in data:
        raise ConfigError(f"{where} holds a key: put it in an environment variable of the server "
                          "and name that variable with key_env")
    unknown = set(data) - SETTINGS
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(SETTINGS))}")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https") \
            or not urlsplit(endpoint).hostname:
        raise ConfigError(f"{where}: endpoint must be an http(s) URL such as https://api.example.com/v1")
    protocol = data.get("protocol", "seed")
    if protocol not in protocols.PROTOCOLS:
        raise ConfigError(f"{where}: protocol {protocol!r} unknown; use one of {', '.join(protocols.PROTOCOLS)}")
    return RelayProfile(name, endpoint, protocol, data.get("model"), data.get("key_env"),
                        {k: data[k] for k in HINTS if k in data})


def _default_user() -> str:
    try:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "jupyter"


class NbModelRelay(LoggingConfigurable):
    """Settings of the nb_model relay and sandbox mounted under ``{base_url}nb-model/``."""

    profiles = Dict(
        config=True,
        help="Relay profiles: name -> {endpoint, protocol (seed|openai|openai-completions), model, key_env}. "
             "key_env names the server's environment variable holding the upstream key.")
    qps = Float(5.0, config=True, help="Requests per second per user through the relay (0: no limit).")
    tokens_per_day = Int(0, config=True,
                         help="Tokens (prompt + completion) per user per UTC day through the relay (0: no limit).")
    allow_insecure_upstream = Bool(
        False, config=True,
        help="Allow sending a key to a plain http:// upstream that is not on this machine.")
    quota_db = Unicode(config=True, help="SQLite file keeping per-user counts across restarts.")
    redis_url = Unicode("", config=True,
                        help="redis://host:port/db to keep per-user counts in Redis instead (shared by servers).")
    token_user = Unicode(config=True,
                         help="User charged for calls made with the relay token (kernels): "
                              "$JUPYTERHUB_USER, else the server's OS user.")
    relay_url = Unicode("", config=True,
                        help="URL kernels use to reach the relay (default: the server's own address).")
    hide_keys_from_kernels = Bool(True, config=True,
                                  help="Remove the profiles' key variables from the server's environment "
                                       "once read, so kernels and terminals do not inherit them.")
    sandbox = Bool(True, config=True, help="Serve the simulated engine under nb-model/sandbox/.")
    sandbox_token_rate = Float(200.0, config=True, help="Tokens per second of the sandbox's streams.")
    connect_timeout = Float(10.0, config=True, help="Seconds to connect to an upstream.")
    request_timeout = Float(600.0, config=True, help="Seconds an upstream reply may take in total.")

    @default("quota_db")
    def _quota_db_default(self) -> str:
        from jupyter_core.paths import jupyter_data_dir
        return os.path.join(jupyter_data_dir(), "nb_model", "relay_quotas.sqlite")

    @default("token_user")
    def _token_user_default(self) -> str:
        return _default_user()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.routes = {name: parse_profile(name, data) for name, data in self.profiles.items()}
        self.relay_token = secrets.token_urlsafe(32)
        self._keys = self._take_keys()
        self.quotas = Quotas(open_store(self.quota_db, self.redis_url), self.qps, self.tokens_per_day)
        self.sandbox_server = None
        for prof in self.routes.values():
            if prof.key_env and not self._keys.get(prof.name):
                self.log.warning("nb_model relay: profile %r: $%s is not set; requests go upstream without a key",
                                 prof.name, prof.key_env)
            if prof.plain_http_remote() and prof.key_env and not self.allow_insecure_upstream:
                self.log.warning("nb_model relay: profile %r uses plain http to a remote host; it will refuse "
                                 "to send its key (use https or set NbModelRelay.allow_insecure_upstream)",
                                 prof.name)

    def _take_keys(self) -> dict[str, str]:
        keys = {p.name: os.environ.get(p.key_env, "").strip() for p in self.routes.values() if p.key_env}
        if self.hide_keys_from_kernels:
            for prof in self.routes.values():
                if prof.key_env:
                    os.environ.pop(prof.key_env, None)
        return {name: key for name, key in keys.items() if key}

    def start(self) -> None:
        """Start the sandbox engine (on a loopback port) if it is on."""
        if self.sandbox and self.sandbox_server is None:
            from ..sandbox import start_sandbox
            self.sandbox_server = start_sandbox(token_rate=self.sandbox_token_rate)

    def stop(self) -> None:
        if self.sandbox_server is not None:
            self.sandbox_server.stop()
            self.sandbox_server = None
        self.quotas.store.close()

    def key_for(self, name: str) -> str | None:
        return self._keys.get(name)

    def secrets(self) -> list[str]:
        """Every secret this relay knows, for log redaction."""
        return [self.relay_token, *self._keys.values()]

    def kernel_env(self, relay_url: str) -> dict[str, str]:
        """The variables kernels inherit to find the relay (see `nb_model.relay_env`)."""
        listed = {name: prof.public(self.qps) for name, prof in self.routes.items()}
        return {URL_ENV: self.relay_url or relay_url, TOKEN_ENV: self.relay_token,
                PROFILES_ENV: json.dumps(listed, sort_keys=True)}

    def status(self) -> dict[str, Any]:
        """Names, protocols and models of the relay profiles, and the limits. Never keys."""
        return {
            "profiles": {name: {**prof.public(0), "key": "held by the server" if name in self._keys else "none"}
                         for name, prof in sorted(self.routes.items())},
            "limits": {"qps": self.qps, "tokens_per_day": self.tokens_per_day},
            "sandbox": self.sandbox,
        }
