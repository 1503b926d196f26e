"""Cache figure, side by side in one run: a cache hit vs the same call over the network.

A. `client.generate(prompt)` answered from the per-notebook SQLite cache (a hit; its
   history row is written too).
B. The same call with `cache="off"`: HTTP to the local sandbox on loopback (history written too).
Both through the real client core, alternated A B A B…; medians over N runs. The sandbox
runs at two speeds: instant (the cheapest possible network call) and 200 tokens/s (the
embedded sandbox's pace, closer to a real model). Target: the hit ≥ 100× faster.

Then the quickstart notebook is executed twice in fresh kernels (nbclient) sharing one cache
file: the requests its embedded sandbox served, cold and warm. Target: the warm run sends 0.

Run: python bench/bench_cache.py [--runs N] [--max-tokens N] [--notebook PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import median, paired, table  # noqa: E402

TARGET = 100.0


def measure(token_rate: float, runs: int, max_tokens: int) -> tuple[float, float, int]:
    """(median hit s, median network s, requests the hits sent)."""
    from nb_model.cache import default_store
    from nb_model.client import Client
    from nb_model.config import Profile
    from nb_model.sandbox import start_sandbox

    server = start_sandbox(qps=0, token_rate=token_rate)
    profile = Profile("bench", server.url, "seed", qps=0)
    client = Client(profile, cache=default_store(profile))
    prompt = "Explain what a cache is, in plain words."
    client.generate(prompt, max_tokens=max_tokens)  # warm: the entry exists, the connection is open
    hit, net = paired(lambda: client.generate(prompt, max_tokens=max_tokens),
                      lambda: client.generate(prompt, max_tokens=max_tokens, cache="off"), runs)
    time.sleep(0.2)  # the sandbox counts a request just after its reply
    sent_by_hits = server.stats()["requests"] - 1 - runs
    server.stop()
    return median(hit), median(net), sent_by_hits


PROBE = ("from nb_model import client as _client\n"
         "print(sum(server.stats()['requests'] for server in _client._embedded.values()))")


def run_notebook(path: str, folder: str) -> tuple[int, float]:
    """(requests its embedded sandbox served, wall seconds) for one run in a fresh kernel."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    t = time.perf_counter()
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": folder}}).execute()
    elapsed = time.perf_counter() - t
    return int(nb.cells[-1].outputs[0]["text"].strip()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--notebook", default=os.path.join(os.path.dirname(__file__), "..", "notebooks",
                                                           "01-quickstart.ipynb"))
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="nb_model-bench-")
    os.environ.update(NB_MODEL_CACHE=os.path.join(folder, "bench.sqlite"), NB_MODEL_LOCAL="off")
    rows = [("sandbox pace", "cache hit (median)", "network call (median)", "hit is faster by", "requests sent by hits")]
    ratios = []
    for label, rate in (("instant", 0.0), ("200 tokens/s", 200.0)):
        hit, net, sent = measure(rate, args.runs, args.max_tokens)
        ratios.append(net / hit)
        rows.append((label, f"{hit * 1e3:.3f} ms", f"{net * 1e3:.2f} ms", f"{net / hit:.0f}×", str(sent)))
    table(f"{args.max_tokens}-token answer, {args.runs} runs each, A/B alternated (SQLite cache, seed protocol)", rows)
    print(f"\ntarget (hit ≥ {TARGET:g}× faster than the network call at the embedded sandbox's pace): "
          f"{'met' if ratios[-1] >= TARGET else 'NOT met'}; against an instant server: {ratios[0]:.0f}×")

    (cold, t_cold), (warm, t_warm) = (run_notebook(args.notebook, folder) for _ in range(2))
    table(f"{os.path.basename(args.notebook)}, two runs in fresh kernels, one cache file", [
        ("run", "requests at the sandbox", "wall time"),
        ("cold", str(cold), f"{t_cold:.2f} s"), ("warm", str(warm), f"{t_warm:.2f} s")])
    print(f"\ntarget (warm re-run sends 0 requests): {'met' if warm == 0 and cold > 0 else 'NOT met'}")


if __name__ == "__main__":
    main()
