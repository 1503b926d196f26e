"""Kernel side of the Jupyter Server relay: `relay:<name>` profiles from the environment.

The server extension (`nb_model.server`) puts three variables into the
environment that kernels inherit:

* ``NB_MODEL_RELAY_URL`` — ``http://127.0.0.1:8888/nb-model/relay/`` (the server's base URL);
* ``NB_MODEL_RELAY_TOKEN`` — a random per-server token, sent as ``Authorization: Bearer``;
* ``NB_MODEL_RELAY_PROFILES`` — JSON ``{name: {"protocol", "model", ...}}``, no keys.

The relay token is these profiles' "key" (``key_env="NB_MODEL_RELAY_TOKEN"``),
so the client core sends it like any key; the upstream key stays in the server.
"""
from __future__ import annotations

import json
import os
from urllib.parse import quote

from .config import Profile, profile_from_dict
from .errors import ConfigError

URL_ENV = "NB_MODEL_RELAY_URL"
TOKEN_ENV = "NB_MODEL_RELAY_TOKEN"
PROFILES_ENV = "NB_MODEL_RELAY_PROFILES"
PREFIX = "relay:"
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
    out = {}
    for name, info in sorted(listed.items()):
        fields = {k: info[k] for k in CLIENT_FIELDS if info.get(k) is not None}
        fields.setdefault("description", "through the Jupyter Server relay (the server holds the key)")
        full = PREFIX + name
        out[full] = profile_from_dict(full, {**fields, "endpoint": base + quote(name, safe=""),
                                             "key_env": TOKEN_ENV})
    return out
