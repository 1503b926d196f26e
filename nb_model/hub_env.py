"""Kernel side of the relay service on JupyterHub (``nb-model relay``): `hub:<name>` profiles.

A kernel of a single-user server started by JupyterHub has the user's own Hub
token in ``$JUPYTERHUB_API_TOKEN``. The service is found from

* ``$NB_MODEL_HUB_URL`` — the service's URL as kernels reach it (the Hub's config sets it with
  ``c.Spawner.environment``), else
* the Hub's API (``$JUPYTERHUB_API_URL``): ``GET services/<name>`` (name from ``$NB_MODEL_HUB_SERVICE``,
  default ``nb-model``), which the token may read when the Hub grants ``read:services!service=<name>``.

The service's ``api/me`` lists its profiles; each becomes ``hub:<name>``, whose "key" is the user's
Hub token (``key_env="JUPYTERHUB_API_TOKEN"``): the upstream key stays in the service. Look-ups are
cached, so a cell costs no extra request; only the footer asks the service what is left today.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any
from urllib.parse import quote

from .config import Profile, profile_from_dict

URL_ENV = "NB_MODEL_HUB_URL"
SERVICE_ENV = "NB_MODEL_HUB_SERVICE"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
API_ENV = "JUPYTERHUB_API_URL"
DEFAULT_SERVICE = "nb-model"
PREFIX = "hub:"
FIELDS = ("protocol", "model", "qps", "price_per_1m", "max_tokens_cap", "context_window", "description")
TIMEOUT_S = 3.0
FOUND_TTL_S, MISSING_TTL_S = 300.0, 30.0

_lock = threading.Lock()
_found: dict[tuple, tuple[float, Any]] = {}  # (url env, api, token) -> (expires, (service URL, me) or None)


def _get(url: str, token: str) -> Any:
    import requests
    resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)
    resp.raise_for_status()
    return resp.json()


def _discover(token: str) -> tuple[str, dict] | None:
    """(service URL ending in /, the service's api/me) or None where there is no service to find."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        api = os.environ.get(API_ENV, "").rstrip("/")
        if not api:
            return None
        name = os.environ.get(SERVICE_ENV) or DEFAULT_SERVICE
        model = _get(f"{api}/services/{quote(name, safe='')}", token)
        if not isinstance(model, dict) or not model.get("url") or not model.get("prefix"):
            return None
        url = model["url"].rstrip("/") + "/" + model["prefix"].lstrip("/")
    url = url if url.endswith("/") else url + "/"
    me = _get(url + "api/me", token)
    return (url, me) if isinstance(me, dict) and isinstance(me.get("profiles"), dict) else None


def service() -> tuple[str, dict] | None:
    """The relay service of this Hub and the caller's `api/me`, cached (None outside JupyterHub)."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    key = (os.environ.get(URL_ENV), os.environ.get(API_ENV), os.environ.get(SERVICE_ENV), token)
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
    out = {}
    for name, info in sorted(me["profiles"].items()):
        if not isinstance(info, dict):
            continue
        fields = {k: info[k] for k in FIELDS if info.get(k) is not None}
        fields.setdefault("description", "through the JupyterHub relay service (the service holds the key)")
        full = PREFIX + name
        out[full] = profile_from_dict(full, {**fields, "endpoint": url + "relay/" + quote(name, safe=""),
                                             "key_env": TOKEN_ENV})
    return out


def me_now() -> dict | None:
    """The caller's `api/me` asked now (not cached): limits and use today; None if unreachable."""
    found = service()
    token = os.environ.get(TOKEN_ENV, "").strip()
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
    if not profile_name or not profile_name.startswith(PREFIX):
        return None
    me = me_now()
    return budget_text(me) if me else None


def usage_lines() -> list[str]:
    """For `%generate usage`: the user's limits and use today on the Hub's relay service."""
    if not os.environ.get(TOKEN_ENV):
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
