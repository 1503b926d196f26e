"""Core slice figures, side by side in one run (medians over N runs, ratios):

1. `%load_ext nb_model` on top of a bare IPython shell start   (target: adds < 100 ms)
2. client consuming a 2048-token sandbox stream vs a raw `requests` loop   (target ≤ 1.10×)
3. bytes of display messages a real kernel sends for that stream vs the final text   (target ≤ 4×), and the
   longest gap between visible updates while text arrives (target ≤ 1 s); also a slow 1200-token answer at
   40 tok/s, where the rich-format preview's twice-a-second refresh of its newest slice costs more than the text
   itself (informative: about 1 KB/s)

Run: python bench/bench_core.py [--runs N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from itertools import pairwise

sys.path.insert(0, os.path.dirname(__file__))
from common import median, paired, process_time, table  # noqa: E402

BARE = "from IPython.core.interactiveshell import InteractiveShell as S; S.instance()"
LOADED = BARE + "; S.instance().run_line_magic('load_ext', 'nb_model')"
HEAVY = ("ipywidgets", "pandas", "redis", "tornado", "llama_cpp", "requests")


def bench_load_ext(runs: int) -> None:
    a = [process_time(LOADED) for _ in range(runs)]
    b = [process_time(BARE) for _ in range(runs)]
    check = BARE + "; S.instance().run_line_magic('load_ext', 'nb_model'); import sys; " \
                   f"print([m for m in {HEAVY!r} if m in sys.modules])"
    import subprocess
    heavy = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout.strip()
    added = (median(a) - median(b)) * 1000
    table("1. %load_ext nb_model (fresh process each run)", [
        ("", "median s", "min s"),
        ("shell + %load_ext nb_model", f"{median(a):.3f}", f"{min(a):.3f}"),
        ("bare IPython shell", f"{median(b):.3f}", f"{min(b):.3f}"),
        ("added by %load_ext", f"{added:.0f} ms", "target < 50 ms"),
        ("heavy modules imported", heavy, ""),
    ])


def bench_stream(runs: int) -> str:
    import requests

    from nb_model.client import Client
    from nb_model.config import resolve_profile
    from nb_model.sandbox import SandboxServer

    server = SandboxServer(port=0, qps=0).start()
    body = {"prompt": "write a long essay about rivers", "max_tokens": 2048, "temperature": 0.7}
    client = Client(resolve_profile("sandbox", endpoint=server.url))
    session = requests.Session()
    texts = {}

    def ours():
        s = client.stream(body["prompt"], max_tokens=2048, temperature=0.7, cache="off")
        texts["ours"] = "".join(s)

    def raw():
        with session.post(server.url + "/v1/generate", json=body, headers={"X-Stream": "true"}, stream=True) as r:
            texts["raw"] = "".join(json.loads(line)["text"] for line in r.iter_lines() if line)

    ours(), raw()  # warm both connections
    a, b = paired(ours, raw, runs)
    server.stop()
    assert texts["ours"] == texts["raw"], "client and raw loop read different text"
    table("2. consume a 2048-token stream from the sandbox (token rate unlimited)", [
        ("", "median s", "min s"),
        ("nb_model client.stream", f"{median(a):.4f}", f"{min(a):.4f}"),
        ("raw requests iter_lines", f"{median(b):.4f}", f"{min(b):.4f}"),
        ("ratio", f"{median(x / y for x, y in zip(a, b)):.2f}x", "target ≤ 1.10x"),
    ])
    return texts["ours"]


def kernel_display(fmt: str, rate: int, max_tokens: int = 2048) -> tuple[int, int, float, int]:
    """Run %%generate in a real kernel; return (iopub output bytes, final text bytes, longest gap in s between
    visible updates up to the last text shown, number of visible updates)."""
    from jupyter_client.manager import start_new_kernel

    cwd = tempfile.mkdtemp()
    km, kc = start_new_kernel(kernel_name="python3", cwd=cwd, env={**os.environ, "NB_MODEL_LOCAL": "off",
                                                                    "NB_MODEL_CACHE": os.path.join(cwd, "c.sqlite")})
    try:
        kc.execute_interactive("%load_ext nb_model", timeout=60)
        code = (f"from nb_model.client import embedded_sandbox\nembedded_sandbox().token_rate = {rate}\n")
        kc.execute_interactive(code, timeout=60)
        sizes, shows = [], []

        def hook(msg):
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind in ("stream", "display_data", "update_display_data"):
                sizes.append(len(json.dumps(content)))
                if content.get("data") or content.get("text"):  # not an emptied preview slice
                    shows.append(msg["header"]["date"].timestamp())

        kc.execute_interactive(f"%%generate --max-tokens {max_tokens} -f {fmt} -o g\n"
                               "write a long essay about rivers", output_hook=hook, timeout=300)
        reply = []
        kc.execute_interactive("print(len(g.text.encode()))", output_hook=lambda m: reply.append(m), timeout=30)
        final = int(next(m["content"]["text"] for m in reply if m["header"]["msg_type"] == "stream"))
        shows = shows[:-1]  # the footer comes last
        gap = max((b - a for a, b in pairwise(shows)), default=0.0)
        return sum(sizes), final, gap, len(shows)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def bench_display() -> None:
    rows = [("format, sandbox rate, tokens", "display bytes", "final text bytes", "ratio", "longest gap",
             "updates", "targets")]
    for fmt, rate, tokens in (("text", 400, 2048), ("markdown", 400, 2048), ("markdown", 40, 1200)):
        sent, final, gap, shown = kernel_display(fmt, rate, tokens)
        target = "≤ 4x, gap ≤ 1 s" if rate >= 400 else "gap ≤ 1 s"
        rows.append((f"{fmt}, {rate} tok/s, {tokens}", sent, final, f"{sent / final:.2f}x", f"{gap:.2f} s", shown,
                     target))
    table("3. frontend bytes and update gaps for a %%generate stream in a real kernel", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    bench_load_ext(args.runs)
    bench_stream(args.runs)
    bench_display()


if __name__ == "__main__":
    main()
