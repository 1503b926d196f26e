"""Batch figure, side by side in one run: 200 unique prompts against the sandbox limited to
20 requests/s (the seed API's documented limit).

A. `nb_model.generate_many(prompts, max_workers=8, cache="off")`: the client's token bucket
   paces the requests.       Targets: answers/s ≥ 95% of 20, 0 HTTP 429 seen by the user.
B. A plain ThreadPoolExecutor loop of bare `requests.post` calls, as the API's docs show
   (no pacing, no retry): its 429s are counted at the sandbox.

Run: python bench/bench_batch.py [--prompts N] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table  # noqa: E402

QPS = 20.0
MAX_TOKENS = 16


def run_generate_many(prompts: list[str], workers: int) -> tuple[float, int, int]:
    """(seconds, answers, 429s seen by the user)."""
    from nb_model.batch import generate_many
    t = time.perf_counter()
    got = generate_many(prompts, max_workers=workers, cache="off", progress=False, max_tokens=MAX_TOKENS)
    elapsed = time.perf_counter() - t
    answers = sum(g.finish_reason in ("stop", "length") for g in got)
    return elapsed, answers, sum("HTTP 429" in (g.error or "") for g in got)


def run_plain_loop(url: str, prompts: list[str], workers: int) -> tuple[float, int, int]:
    """(seconds, answers, 429s): the docs' pattern, one bare POST per prompt."""
    import requests

    def call(prompt: str) -> int:
        return requests.post(f"{url}/v1/generate", json={"prompt": prompt, "max_tokens": MAX_TOKENS},
                             timeout=60).status_code

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = list(pool.map(call, prompts))
    return time.perf_counter() - t, statuses.count(200), statuses.count(429)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    from nb_model.sandbox import start_sandbox
    server = start_sandbox(qps=QPS)
    os.environ.update(NB_MODEL_ENDPOINT=server.url, NB_MODEL_PROTOCOL="seed", NB_MODEL_LOCAL="off")
    run_generate_many(["warm-up"], 1)  # imports and first connection, outside the timed runs
    run_plain_loop(server.url, ["warm-up"], 1)
    n = args.prompts
    rows = [("", "generate_many", "plain ThreadPoolExecutor loop")]
    for name, fn in (("a", lambda p: run_generate_many(p, args.workers)),
                     ("b", lambda p: run_plain_loop(server.url, p, args.workers))):
        time.sleep(1.5)  # both start with the server's bucket full
        server.reset()
        elapsed, answers, user_429 = fn([f"bench {name} prompt {i}: name a river" for i in range(n)])
        stats = server.stats()
        rows.append((name, elapsed, answers, user_429, stats["by_status"].get("429", 0), stats["requests"]))
    (_, ea, aa, ua, sa, ra), (_, eb, ab, ub, sb, rb) = rows[1], rows[2]
    rate_a, rate_b = aa / ea, ab / eb
    table(f"{n} unique prompts, {args.workers} workers, sandbox limited to {QPS:g} requests/s (cache off)", [
        rows[0],
        ("wall time", f"{ea:.2f} s", f"{eb:.2f} s"),
        ("prompts answered", f"{aa}/{n}", f"{ab}/{n}"),
        ("answers per second", f"{rate_a:.1f} ({rate_a / QPS:.0%} of {QPS:g})", f"{rate_b:.1f} ({n - ab} left unanswered)"),
        ("HTTP 429 seen by the user", str(ua), str(ub)),
        ("HTTP 429 at the sandbox", str(sa), str(sb)),
        ("requests the sandbox served", str(ra), str(rb)),
    ])
    ok = rate_a >= 0.95 * QPS and ua == 0 and aa == n
    print(f"\ntarget (generate_many ≥ {0.95 * QPS:g} answers/s, 0 × 429 seen, all answered): "
          f"{'met' if ok else 'NOT met'}")
    server.stop()


if __name__ == "__main__":
    main()
