"""Batch figures, side by side in one run, against the sandbox limited to 20 requests/s (the seed API's
documented limit).

1. Latency: 200 unique prompts whose answers take 0.05 s, 0.8 s (the API docs' figure) and 2.5 s (larger
   models). A. `nb_model.generate_many(prompts, cache="off")` with default settings (in-flight window from
   the rate and the observed latency). B. The API docs' loop: `ThreadPoolExecutor(max_workers=4)` of bare
   `requests.post` calls (no pacing, no retry). Answers/s is counted over the run's time less one answer's
   latency (filling the pipeline, which no client can avoid).
   Targets: A ≥ 95% of 20/s at every latency, 0 HTTP 429 seen by the user.
2. Packing: 200 short prompts with 20-token answers, unpacked vs `pack=10`, then `pack=10` with the
   format-breaking fault on 10% of the packs. Target: pack=10 ≥ 8× the items/s, 200/200 answered.
3. Outage: 200 prompts at 0.8 s per answer through a 10 s run of HTTP 503 (starting 2 s in):
   `generate_many` vs the plain loop — answered/total and wall time.

Run: python bench/bench_batch.py [--prompts N] [--only latency,packing,outage]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.abspath(os.path.dirname(__file__))))
from common import table  # noqa: E402

QPS = 20.0
MAX_TOKENS = 20
LATENCIES = (0.05, 0.8, 2.5)


def rate_for(latency: float) -> float:
    """The sandbox's token rate that makes a MAX_TOKENS answer take `latency` seconds."""
    return (MAX_TOKENS - 1) / latency


def run_generate_many(prompts: list[str], **kw) -> tuple[float, list]:
    from nb_model.batch import generate_many
    t = time.perf_counter()
    got = generate_many(prompts, cache="off", progress=False, max_tokens=MAX_TOKENS, **kw)
    return time.perf_counter() - t, got


def ok(got) -> int:
    return sum(g is not None and g.finish_reason in ("stop", "length") for g in got)


def user_429(got) -> int:
    return sum("HTTP 429" in (g.error or "") for g in got if g is not None)


def run_plain_loop(url: str, prompts: list[str], workers: int = 4) -> tuple[float, int, int]:
    """(seconds, answers, 429s): the docs' pattern, one bare POST per prompt."""
    import requests

    def call(prompt: str) -> int:
        try:
            return requests.post(f"{url}/v1/generate", json={"prompt": prompt, "max_tokens": MAX_TOKENS},
                                 timeout=60).status_code
        except requests.RequestException:
            return 0

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = list(pool.map(call, prompts))
    return time.perf_counter() - t, statuses.count(200), statuses.count(429)


def fresh(server, token_rate: float) -> None:
    time.sleep(1.2)  # every run starts with the server's bucket full
    server.token_rate = token_rate
    server.reset()


def latency_table(server, n: int) -> bool:
    rows = [("answer latency", "generate_many (default)", "docs' ThreadPoolExecutor(4) loop", "in flight (peak)")]
    met = True
    from nb_model.batch import last_run
    for latency in LATENCIES:
        fresh(server, rate_for(latency))
        elapsed, got = run_generate_many([f"lat {latency} prompt {i}: name a river" for i in range(n)])
        a_ok, a_429, peak = ok(got), user_429(got), last_run["peak_in_flight"]
        a_rate = a_ok / max(elapsed - latency, 1e-9)
        server_429 = server.stats()["by_status"].get("429", 0)
        fresh(server, rate_for(latency))
        eb, b_ok, b_429 = run_plain_loop(server.url, [f"plain {latency} prompt {i}" for i in range(n)])
        b_rate = b_ok / max(eb - latency, 1e-9)
        met = met and a_rate >= 0.95 * QPS and a_429 == 0 and a_ok == n
        rows.append((f"{latency:g} s",
                     f"{a_rate:.1f}/s ({a_rate / QPS:.0%}), {elapsed:.1f} s, {a_ok}/{n}, 429: {a_429} seen "
                     f"({server_429} at server)",
                     f"{b_rate:.1f}/s ({b_rate / QPS:.0%}), {eb:.1f} s, {b_ok}/{n}, 429: {b_429}",
                     str(peak)))
    table(f"1. {n} unique prompts, sandbox limited to {QPS:g} requests/s, {MAX_TOKENS}-token answers "
          "(answers/s over the run less one answer's latency)", rows)
    print(f"target (generate_many ≥ {0.95 * QPS:g}/s at every latency, 0 × 429 seen, all answered): "
          f"{'met' if met else 'NOT met'}")
    return met


def packing_table(server, n: int) -> bool:
    from nb_model.batch import last_run
    prompts = [f"Name one river of country number {i}" for i in range(n)]
    runs = []
    for label, pack, faults in (("unpacked", None, 0), ("pack=10", 10, 0),
                                ("pack=10, 10% of packs broken", 10, max(1, n // 200))):
        fresh(server, 0.0)
        if faults:
            server.inject("pack-drop", times=faults)
            server.inject("pack-merge", times=faults)
        elapsed, got = run_generate_many(prompts, pack=pack)
        stats = server.wait_idle()
        tokens = sum(g.usage.total_tokens for g in got if g is not None)
        runs.append((label, elapsed, ok(got), stats["requests"], tokens, last_run.get("unpacked", 0)))
    base = runs[0][2] / runs[0][1]
    rows = [("", "items/s", "vs unpacked", "answered", "requests", "tokens (prompt + completion)",
             "items retried alone")]
    for label, elapsed, answered, requests, tokens, unpacked in runs:
        rate = answered / elapsed
        rows.append((label, f"{rate:.1f}", f"{rate / base:.1f}×", f"{answered}/{n}", str(requests), str(tokens),
                     str(unpacked)))
    table(f"2. {n} short prompts, {MAX_TOKENS}-token answers, sandbox at {QPS:g} requests/s", rows)
    met = runs[1][2] / runs[1][1] >= 8 * base and all(r[2] == n for r in runs)
    print(f"target (pack=10 ≥ 8× the items/s, {n}/{n} answered even with broken packs): "
          f"{'met' if met else 'NOT met'}")
    return met


def outage_table(server, n: int) -> bool:
    latency = 0.8
    results = []
    for name in ("generate_many", "plain"):
        fresh(server, rate_for(latency))
        timer = threading.Timer(2.0, lambda: server.inject("503", seconds=10))
        timer.start()
        if name == "generate_many":
            elapsed, got = run_generate_many([f"outage prompt {i}" for i in range(n)])
            answered = ok(got)
        else:
            elapsed, answered, _ = run_plain_loop(server.url, [f"plain outage prompt {i}" for i in range(n)])
        timer.join()
        server.clear_faults()
        results.append((answered, elapsed))
    (aa, ea), (ab, eb) = results
    table(f"3. {n} prompts at {latency:g} s per answer through a 10 s outage (HTTP 503 from 2 s on)", [
        ("", "generate_many (default)", "docs' ThreadPoolExecutor(4) loop"),
        ("answered", f"{aa}/{n}", f"{ab}/{n}"),
        ("wall time", f"{ea:.1f} s", f"{eb:.1f} s"),
    ])
    met = aa == n
    print(f"target (generate_many answers {n}/{n} through the outage): {'met' if met else 'NOT met'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--only", default="latency,packing,outage")
    args = parser.parse_args()

    from nb_model.sandbox import start_sandbox
    server = start_sandbox(qps=QPS)
    os.environ.update(NB_MODEL_ENDPOINT=server.url, NB_MODEL_PROTOCOL="seed", NB_MODEL_LOCAL="off",
                      NB_MODEL_CACHE="off")
    run_generate_many(["warm-up"])  # imports and first connection, outside the timed runs
    run_plain_loop(server.url, ["warm-up"], 1)
    parts = {"latency": latency_table, "packing": packing_table, "outage": outage_table}
    for name in args.only.split(","):
        parts[name.strip()](server, args.prompts)
    server.stop()


if __name__ == "__main__":
    main()
