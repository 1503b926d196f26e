"""`NbModelRelay`: the relay's settings (traitlets, so `c.NbModelRelay.qps = 2` works) and state.

    c.NbModelRelay.profiles = {
        "course": {"endpoint": "https://api.example.com/v1", "protocol": "openai",
                   "model": "small-1", "key_env": "COURSE_API_KEY"},
    }
    c.NbModelRelay.qps = 2               # per user, requests per second (0: no limit)
    c.NbModelRelay.tokens_per_day = 200_000  # per user, prompt + completion (0: no limit)

A profile's key comes from one of: ``key_env`` (a variable of the server's
environment), ``key_file`` (a file only the server's user can read: mode 600),
or ``key`` (the literal key, accepted here in the server's own config only, never
in kernel-side profile files; keep it off the command line, which every process
of the same user can read in /proc/<pid>/cmdline). Keys are read once when the
extension loads. By default the key variables are then removed from the
environment, so kernels and terminals started later do not inherit them, and
(on Linux) their values are overwritten in the process's original environment
block, so ``/proc/<server pid>/environ`` no longer shows them. A kernel still
runs as the same OS user as the server: this keeps keys out of notebooks and
their outputs, but it is not a wall against code that reads the server's memory
or the files its user can read. For that, run the key-holding server under
another account.

Requests are shaped before they go upstream: the profile's ``model`` replaces
the caller's, ``max_tokens`` may not exceed ``max_tokens_cap`` (and defaults to
it), one completion per request (``n``/``best_of`` 1).
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

from ..protocols import adapter
from ..tokens import estimate_tokens
from ..errors import ConfigError
from ..config.env import CLIENT_FIELDS, PROFILES_ENV, TOKEN_ENV, URL_ENV
from ..config.profiles import EMBEDDED_PREFIX, profile_from_dict
from .metering import prompt_text
from .quotas import Quotas, open_store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# relay path -> the protocol whose adapter builds the upstream URL
PATH_PROTOCOL = {"v1/generate": "seed", "v1/chat/completions": "openai", "v1/completions": "openai-completions"}
FAMILY = {"seed": "seed", "openai": "openai", "openai-completions": "openai"}
HINTS = ("price_per_1m", "max_tokens_cap", "context_window", "description")
KEY_SOURCES = ("key_env", "key_file", "key")
SETTINGS = {"endpoint", "protocol", "model", *KEY_SOURCES, *HINTS}
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")  # the second: newer OpenAI name
# chat servers count a few tokens around each message (role markers) and before the reply
MESSAGE_TOKENS, REPLY_TOKENS = 4, 3


class BadRequest(ValueError):
    """A relayed request the relay will not send; the message becomes a 400 reply."""


@dataclass(frozen=True)
class RelayProfile:
    """One upstream the relay serves. Holds where its key comes from, never the key."""

    name: str
    endpoint: str
    protocol: str = "seed"
    model: str | None = None
    key_env: str | None = None
    hints: dict[str, Any] = field(default_factory=dict)
    key_file: str | None = None
    key_in_config: bool = False

    @property
    def keyed(self) -> bool:
        return bool(self.key_env or self.key_file or self.key_in_config)

    def shape(self, raw: bytes) -> tuple[bytes, int]:
        """(body sent upstream, tokens to reserve): model forced, max_tokens within the cap, one choice.

        Raises `BadRequest` (one line) for a body the relay will not send.
        """
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if self.model:
            body["model"] = self.model
        for name in ("n", "best_of"):
            if body.get(name) not in (None, 1):
                raise BadRequest(f"{name}={body[name]!r}: the relay serves one completion per request; "
                                 f"send {name}=1 or leave it out")
        cap = self.hints.get("max_tokens_cap")
        given = [name for name in TOKEN_FIELDS if body.get(name) is not None]
        for name in given:
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(f"{name} must be a positive integer")
            if cap and value > cap:
                raise BadRequest(f"{name}={value} is over the cap of relay profile {self.name!r}: "
                                 f"use at most {cap}")
        if not given and cap:
            body["max_tokens"] = cap
            given = ["max_tokens"]
        completion = max((body[name] for name in given), default=0)
        messages = body.get("messages")
        framing = MESSAGE_TOKENS * len(messages) + REPLY_TOKENS if isinstance(messages, list) else 0
        return json.dumps(body).encode(), completion + estimate_tokens(prompt_text(body), bound=True) + framing

    def upstream(self, path: str) -> tuple[str, str] | None:
        """(upstream URL, protocol) for a relay path, None if this profile does not serve it."""
        protocol = PATH_PROTOCOL.get(path.strip("/"))
        if protocol is None or FAMILY[protocol] != FAMILY[self.protocol]:
            return None
        return adapter(protocol).url_for(self), protocol

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
        raise ConfigError(f"{where} must be a dict with endpoint, protocol, model and key_env, key_file or key")
    if "api_key" in data:
        raise ConfigError(f"{where}: api_key is not a setting; name the key's variable with key_env, "
                          "its file with key_file, or (server config only) set key")
    sources = [k for k in KEY_SOURCES if data.get(k) is not None]
    if len(sources) > 1:
        raise ConfigError(f"{where}: give one of {', '.join(sources)}, not several")
    for k in sources:
        if not isinstance(data[k], str) or not data[k].strip():
            raise ConfigError(f"{where}: {k} must be a non-empty string")
    unknown = set(data) - SETTINGS
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(SETTINGS))}")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or endpoint.startswith(EMBEDDED_PREFIX):
        raise ConfigError(f"{where}: endpoint must be an http(s) URL such as https://api.example.com/v1")
    # the settings a kernel-side profile also has go through config's own checks (types, ranges, URL)
    checked = profile_from_dict(name, {k: v for k, v in data.items() if k not in ("key", "key_file")}, where=where)
    return RelayProfile(name, checked.endpoint, checked.protocol, checked.model, checked.key_env,
                        {k: getattr(checked, k) for k in HINTS if k in data}, key_file=data.get("key_file"),
                        key_in_config=data.get("key") is not None)


def _environ_block_offsets(names: set[str]) -> tuple[int, list[tuple[int, int]]]:
    """(env_start, [(offset, length) of each value of `names`]) in this process's original environment."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    env_start = int(stat[stat.rindex(b")") + 2:].split()[50 - 3])  # field 50 of proc(5); fields from 3 on
    with open("/proc/self/environ", "rb") as f:
        block = f.read()
    spots, offset = [], 0
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and value and name.decode("utf-8", "replace") in names:
            spots.append((offset + len(name) + 1, len(value)))
        offset += len(entry) + 1
    return env_start, spots


def scrub_environ_block(names: set[str]) -> int:
    """Overwrite the values of `names` in this process's original environment block (Linux), so
    ``/proc/<pid>/environ`` no longer shows them; returns how many were overwritten. Raises OSError."""
    if not names or not os.path.exists("/proc/self/environ"):  # no /proc (macOS): nothing to read there either
        return 0
    try:
        env_start, spots = _environ_block_offsets(names)
    except (ValueError, IndexError) as exc:
        raise OSError(f"unexpected /proc/self/stat ({exc})") from None
    if spots:
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for offset, length in spots:
                mem.seek(env_start + offset)
                mem.write(b"*" * length)
    return len(spots)


def _default_user() -> str:
    try:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "jupyter"


class NbModelRelay(LoggingConfigurable):
    """Settings of the nb_model relay and sandbox mounted under ``{base_url}nb-model/``."""

    profiles = Dict(
        config=True,
        help="Relay profiles: name -> {endpoint, protocol (seed|openai|openai-completions), model, and one of "
             "key_env (the server's environment variable holding the upstream key), key_file (a file holding "
             "it, mode 600) or key (the key itself), max_tokens_cap, ...}.")
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
                                       "once read (and, on Linux, overwrite them in /proc/<pid>/environ), "
                                       "so kernels and terminals do not inherit or read them.")
    sandbox = Bool(True, config=True, help="Serve the simulated engine under nb-model/sandbox/.")
    sandbox_token_rate = Float(200.0, config=True, help="Tokens per second of the sandbox's streams.")
    max_request_bytes = Int(1 << 20, config=True,
                            help="Largest request body the relay and sandbox routes accept (bytes); a longer "
                                 "one gets 413 before it is read.")
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
            if prof.plain_http_remote() and prof.keyed and not self.allow_insecure_upstream:
                self.log.warning("nb_model relay: profile %r uses plain http to a remote host; it will refuse "
                                 "to send its key (use https or set NbModelRelay.allow_insecure_upstream)",
                                 prof.name)

    def _take_keys(self) -> dict[str, str]:
        keys = {}
        for prof in self.routes.values():
            if prof.key_file:
                keys[prof.name] = self._read_key_file(prof)
            elif prof.key_in_config:
                keys[prof.name] = self.profiles[prof.name]["key"].strip()
            elif prof.key_env:
                keys[prof.name] = os.environ.get(prof.key_env, "").strip()
        names = {p.key_env for p in self.routes.values() if p.key_env}
        if self.hide_keys_from_kernels and names:
            for name in names:
                os.environ.pop(name, None)
            try:
                scrub_environ_block(names)
            except OSError as exc:
                self.log.warning("nb_model relay: could not clear %s from the server's original environment (%s); "
                                 "kernels may be able to read the key from /proc/%d/environ: prefer key_file, or "
                                 "run the server under another account", ", ".join("$" + n for n in sorted(names)),
                                 exc.strerror or exc, os.getpid())
        return {name: key for name, key in keys.items() if key}

    def _read_key_file(self, prof: RelayProfile) -> str:
        """The key in `prof.key_file` ("" if unreadable, with a warning); warns if others may read it."""
        path = os.path.expanduser(prof.key_file)
        try:
            with open(path, encoding="utf-8") as f:
                key, mode = f.read().strip(), os.fstat(f.fileno()).st_mode
        except (OSError, UnicodeDecodeError) as exc:
            self.log.warning("nb_model relay: profile %r: cannot read key_file %s (%s); requests go upstream "
                             "without a key", prof.name, path, getattr(exc, "strerror", None) or exc)
            return ""
        if not key:
            self.log.warning("nb_model relay: profile %r: key_file %s is empty; requests go upstream without a key",
                             prof.name, path)
        if mode & 0o077:
            self.log.warning("nb_model relay: profile %r: key_file %s is open to other users (mode %03o): "
                             "chmod 600 %s", prof.name, path, mode & 0o777, path)
        return key

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
        """The variables kernels inherit to find the relay (see `nb_model.config.env`)."""
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
