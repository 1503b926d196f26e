"""Jupyter Server extension: a key-holding relay with per-user quotas, and the sandbox engine.

Enabled on install by ``jupyter-config/jupyter_server_config.d/nb_model.json``.
Routes under ``{base_url}nb-model/``: ``relay/<profile>/<path>``, ``sandbox/<path>``,
``status``. Configure with ``c.NbModelRelay.*`` (see `nb_model.server.relay`).
Kernels started by the server inherit ``NB_MODEL_RELAY_URL``/``_TOKEN``/``_PROFILES``
and get ``relay:<name>`` profiles (see `nb_model.config.env`).
"""
from __future__ import annotations

import os


def _jupyter_server_extension_points():
    return [{"module": "nb_model.server"}]


def relay_url(serverapp) -> str:
    """How a kernel on this machine reaches the relay: the server's own address, loopback if wildcard."""
    ip = serverapp.ip
    host = "127.0.0.1" if ip in ("", "0.0.0.0", "*") else "[::1]" if ip == "::" else (
        f"[{ip}]" if ":" in ip else ip)
    scheme = "https" if serverapp.certfile else "http"
    return f"{scheme}://{host}:{serverapp.port}{serverapp.base_url}nb-model/relay/"


def _load_jupyter_server_extension(serverapp) -> None:
    """Mount the handlers, start the sandbox, publish the relay to kernels, redact the logs."""
    from . import redact
    from .handlers import handlers_for
    from .relay import NbModelRelay

    relay = NbModelRelay(parent=serverapp)
    redact.install(serverapp.log, relay.secrets)
    web_app = serverapp.web_app
    web_app.settings["nb_model_relay"] = relay
    web_app.add_handlers(".*$", handlers_for(web_app.settings["base_url"]))
    relay.start()

    def publish() -> None:
        if serverapp.sock and not relay.relay_url:
            serverapp.log.warning("nb_model relay: the server listens on a unix socket; set "
                                  "NbModelRelay.relay_url for kernels to reach the relay")
            return
        os.environ.update(relay.kernel_env(relay_url(serverapp)))

    publish()  # the port may still change (port 0, retries): publish again once bound
    serverapp.io_loop.add_callback(publish)
    names = ", ".join(sorted(relay.routes)) or "no profiles"
    serverapp.log.info("nb_model | relay (%s) and %s under %snb-model/", names,
                       "sandbox" if relay.sandbox else "no sandbox", serverapp.base_url)
