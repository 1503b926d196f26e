"""Fixtures and helpers shared by several test files."""

import contextlib
import os

import pytest


def replay(msgs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(outputs as nbclient saves them: updates applied; outputs as nbval records them: first bundles)."""
    saved, recorded, where = [], [], {}
    for m in msgs:
        kind, content = m["msg_type"], m["content"]
        if kind == "display_data":
            saved.append(dict(content["data"]))
            recorded.append(dict(content["data"]))
            display_id = content.get("transient", {}).get("display_id")
            if display_id:
                where.setdefault(display_id, []).append(len(saved) - 1)
        elif kind == "update_display_data":
            for i in where[content["transient"]["display_id"]]:
                saved[i] = dict(content["data"])
        elif kind == "stream":
            saved.append({"stream": content["text"]})
            recorded.append({"stream": content["text"]})
    return saved, recorded


@contextlib.contextmanager
def started_kernel(cwd, setup: str):
    """A real IPython kernel in `cwd` (no endpoint, cache or local model from the environment) that has run
    `setup`; `kc.manager` is its KernelManager (for interrupts)."""
    from jupyter_client.manager import start_new_kernel
    env = {**os.environ, "NB_MODEL_LOCAL": "off", "NB_MODEL_CACHE": "off", "HOME": str(cwd)}
    env = {k: v for k, v in env.items() if not k.startswith(("NB_MODEL_ENDPOINT", "NB_MODEL_PROFILE", "MODEL_API"))}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)
    try:
        kc.execute_interactive(setup, timeout=60)
        kc.manager = km
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with started_kernel(tmp_path_factory.mktemp("kernel"),
                        "%load_ext nb_model\nfrom nb_model.client import embedded_sandbox") as kc:
        yield kc


def run_cell(kc, code: str, timeout: float = 120) -> list[dict]:
    msgs = []
    reply = kc.execute_interactive(code, output_hook=msgs.append, timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
    return msgs
