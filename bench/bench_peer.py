"""nb_model's `%%generate` vs jupyter-ai's `%%ai` magic, side by side in real kernels (medians over N runs):

1. `%load_ext` time in a fresh kernel
2. a 200-token answer (greedy, the same prompt for both) from one OpenAI-compatible server (the
   sandbox at 100 tokens/s): time until the first text is visible in the output area, and until the
   cell is done (nb_model's first cell includes importing its HTTP stack, which `%load_ext` defers)
3. re-running that cell: time and requests sent

Both run in one virtualenv (same Python, IPython and ipykernel) against one sandbox server over its
OpenAI chat protocol. The first run creates that virtualenv in ~/.cache/nb_model/peer-venv
(`pip install jupyter-ai-magics langchain-openai` plus this project; a few minutes, once).

Run: python bench/bench_peer.py [--runs N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import median, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = Path.home() / ".cache" / "nb_model" / "peer-venv"
PEER = ["jupyter-ai-magics==2.31.7", "langchain-openai"]
TOKENS, RATE = 200, 100

TOOLS = {
    "nb_model": ("nb_model", "%%generate --max-tokens {n} -t 0 -p bench\n{prompt}"),
    "jupyter-ai": ("jupyter_ai_magics",
                   '%%ai openai-chat-custom:sandbox -f text -m {{"max_tokens":{n},"temperature":0}}\n{prompt}'),
}


def ensure_venv() -> Path:
    """The virtualenv holding both magics (created once)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER, "-e", str(ROOT)], check=True)
    return python


def kernel_env(url: str, folder: str) -> dict:
    profiles = Path(folder) / "profiles.toml"
    profiles.write_text(f'[profiles.bench]\nendpoint = "{url}"\nprotocol = "openai"\nmodel = "sandbox"\n')
    return {**os.environ, "NB_MODEL_CONFIG": str(profiles), "NB_MODEL_LOCAL": "off",
            "NB_MODEL_CACHE": str(Path(folder) / "cache.sqlite"),
            "OPENAI_API_KEY": "not-a-key", "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_BASE": f"{url}/v1"}


def run_cell(kc, code: str) -> tuple[float, float]:
    """(seconds until the first sandbox text reached the output area, seconds until the cell was done)."""
    start, first = time.monotonic(), []

    def hook(msg):
        content = msg["content"]
        if msg["header"]["msg_type"] == "error":
            raise RuntimeError(f"{content['ename']}: {content['evalue']}")
        text = content.get("text") or "".join(str(v) for v in content.get("data", {}).values())
        if not first and "[sandbox]" in text:
            first.append(time.monotonic() - start)

    kc.execute_interactive(code, output_hook=hook, timeout=120)
    done = time.monotonic() - start
    if not first:
        raise RuntimeError(f"no text was shown for {code.splitlines()[0]!r}")
    return first[0], done


def one_kernel(server, tool: str, run: int) -> dict:
    """A fresh kernel: load the magic, one new prompt, then the same cell again."""
    from jupyter_client.manager import start_new_kernel

    module, cell = TOOLS[tool]
    folder = tempfile.mkdtemp()
    km, kc = start_new_kernel(kernel_name="python3", cwd=folder, env=kernel_env(server.url, folder))
    try:
        t = time.monotonic()
        kc.execute_interactive(f"%load_ext {module}", timeout=60)
        loaded = time.monotonic() - t
        code = cell.format(n=TOKENS, prompt=f"Write a long essay about river number {run}")  # runs to max_tokens
        before = server.wait_idle()["requests"]
        first, done = run_cell(kc, code)
        again_first, again = run_cell(kc, code)
        sent_again = server.wait_idle()["requests"] - before - 1
        return {"load": loaded, "first": first, "done": done, "again": again, "sent_again": sent_again}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def inside(runs: int) -> None:
    from nb_model.sandbox import SandboxServer

    with SandboxServer(port=0, qps=0, token_rate=RATE, quiet=True) as server:
        got = {tool: [] for tool in TOOLS}
        for run in range(runs):  # alternate so machine drift hits both alike
            for tool in TOOLS:
                got[tool].append(one_kernel(server, tool, run))

    def med(tool, key):
        return median(r[key] for r in got[tool])

    ours, peer = "nb_model", "jupyter-ai"
    rows = [("", "nb_model %%generate", "jupyter-ai %%ai", "ratio (peer / ours)")]
    for key, label in (("load", "%load_ext (s)"), ("first", "first text visible (s)"),
                       ("done", "cell done (s)"), ("again", "re-run the cell (s)")):
        rows.append((label, f"{med(ours, key):.3f}", f"{med(peer, key):.3f}",
                     f"{med(peer, key) / med(ours, key):.1f}x"))
    rows.append(("requests sent by the re-run", f"{med(ours, 'sent_again'):.0f}",
                 f"{med(peer, 'sent_again'):.0f}", ""))
    table(f"{TOKENS}-token answer at {RATE} tokens/s, fresh kernel per run, medians of {runs} runs", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return inside(args.runs)
    python = ensure_venv()
    subprocess.run([str(python), __file__, "--inside", "--runs", str(args.runs)], check=True)


if __name__ == "__main__":
    main()
