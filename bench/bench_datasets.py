"""Extraction figure: `nb_model.extract` over 1,000 reviews against the sandbox limited to 20
requests/s (the seed API's documented limit) with answers taking 0.8 s (its documented latency).

The engine behind the sandbox is the simulated one, slowed to 0.8 s per answer, and made to
misbehave like real models on a fixed share of prompts (chosen by a hash of the prompt): 5%
of answers come wrapped in prose and a code fence with a trailing comma (repairable), 5% are
cut in half (only a retry helps; the retry's prompt differs, so it is answered well).

Each configuration in RUNS is timed in the same run (rows/s, calls, the share of rows that
needed a repair or a retry, failures): one row per request, and rows packed 8 to a request
(``pack=8``). A packed request also answers in 0.8 s here (the damage is drawn per row, so the
shares stay comparable); a real model writing eight answers takes longer per request — the
latency table of `bench_batch.py` shows the in-flight window absorbing that.

Run: python bench/bench_datasets.py [--rows N] [--workers N]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table  # noqa: E402

QPS = 20.0
LATENCY_S = 0.8
NOISY, BROKEN = 0.05, 0.05
FIELDS = {"sentiment": ["positive", "negative", "neutral"], "price": float, "product": str}
RUNS = [
    ("one row per request", {}),
    ("packed by 8", {"pack": 8}),
]
OPENINGS = ["I love the {p}, excellent value at ${n}.", "The {p} broke after {n} days. Terrible.",
            "The {p} is grey and {n} cm wide.", "Great {p}, but it died after {n} weeks and support was poor."]
PRODUCTS = ["kettle", "lamp", "chair", "blender", "toaster", "backpack", "umbrella", "keyboard", "speaker", "charger"]


def reviews(n: int, tag: str) -> list[str]:
    return [OPENINGS[i % 4].format(p=PRODUCTS[i % len(PRODUCTS)], n=5 + i % 90) + f" ({tag} order {i})"
            for i in range(n)]


def slow_engine():
    """The simulated engine, answering after LATENCY_S and damaging a fixed share of answers.

    The wait is once per request: a packed request's items are answered one by one by the same
    engine (see `nb_model.sandbox.packing`), so the packed answer waits once and its items do not."""
    import threading

    import nb_model.sandbox.server as sandbox_server
    from nb_model.sandbox.engine import SimulatedEngine, TokenStream
    from nb_model.sandbox.schema import corrupt, pieces

    in_pack = threading.local()
    packed_answer = sandbox_server.packed_answer

    def slow_packed_answer(engine, prompt, params, fault=""):
        in_pack.on = True
        try:
            answer = packed_answer(engine, prompt, params, fault)
        finally:
            in_pack.on = False
        if answer is not None:
            time.sleep(LATENCY_S)
        return answer

    sandbox_server.packed_answer = slow_packed_answer

    class Slow(SimulatedEngine):
        def generate(self, prompt, **kw):
            if not getattr(in_pack, "on", False):
                time.sleep(LATENCY_S)
            stream = super().generate(prompt, **kw)
            share = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") / 2 ** 32
            if share >= NOISY + BROKEN:
                return stream
            text = corrupt("".join(stream), "json-noise" if share < NOISY else "json-invalid")
            return TokenStream(_pieces(pieces(text)))

    def _pieces(it):
        yield from it
        return "stop"

    return Slow()


def run(texts: list[str], workers: int, extra: dict) -> dict:
    from nb_model.datasets import extract
    t = time.perf_counter()
    df = extract(texts, FIELDS, template="Extract the fields.\n\nReview: {item}", max_workers=workers,
                 cache="off", progress=False, **extra)
    elapsed = time.perf_counter() - t
    return {"seconds": elapsed, **df.attrs["nb_model"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None,
                        help="cap on requests in flight (default: extract's own window, from the rate and latency)")
    args = parser.parse_args()

    from nb_model.sandbox import start_sandbox
    server = start_sandbox(qps=QPS, engine=slow_engine())
    os.environ.update(NB_MODEL_ENDPOINT=server.url, NB_MODEL_PROTOCOL="seed", NB_MODEL_LOCAL="off",
                      NB_MODEL_CACHE="off")
    run(["warm-up: the lamp is fine"], 1, {})  # imports and the first connection, outside the timed runs
    results = []
    for name, extra in RUNS:
        time.sleep(1.5)  # every run starts with the server's bucket full
        server.reset()
        got = run(reviews(args.rows, name), args.workers, extra)
        got["requests"] = server.wait_idle()["requests"]
        got["429"] = server.stats()["by_status"].get("429", 0)
        results.append((name, got))
    rows = [("",) + tuple(name for name, _ in results)]
    for label, fmt in (
            ("wall time", lambda r: f"{r['seconds']:.1f} s"),
            ("rows per second", lambda r: f"{r['rows'] / r['seconds']:.1f}"),
            ("requests sent (HTTP 429 at the sandbox)", lambda r: f"{r['requests']} ({r['429']})"),
            ("tokens (prompt + answer) per row", lambda r: f"{r['tokens'] / r['rows']:.0f}"),
            ("rows valid at once", lambda r: f"{r['ok']} ({r['ok'] / r['rows']:.1%})"),
            ("rows repaired (noise around the JSON)", lambda r: f"{r['repaired']} ({r['repaired'] / r['rows']:.1%})"),
            ("rows retried (broken JSON)", lambda r: f"{r['retried']} ({r['retried'] / r['rows']:.1%})"),
            ("rows that needed a repair or a retry",
             lambda r: f"{(r['repaired'] + r['retried']) / r['rows']:.1%}"),
            ("rows failed (_error)", lambda r: str(r["failed"]))):
        rows.append((label,) + tuple(fmt(r) for _, r in results))
    workers = f"{args.workers} workers" if args.workers else "default in-flight window"
    table(f"extract: {args.rows} reviews, 3 fields, {workers}, sandbox at {QPS:g} requests/s and "
          f"{LATENCY_S:g} s per answer ({NOISY:.0%} noisy, {BROKEN:.0%} broken answers), cache off", rows)
    best = max(r["rows"] / r["seconds"] for _, r in results)
    first = results[0][1]["rows"] / results[0][1]["seconds"]
    print(f"\none row per request: {first:.1f} rows/s ({first / QPS:.0%} of the {QPS:g} requests/s limit, its "
          f"bound); best: {best:.1f} rows/s ({best / first:.1f}× one row per request)")
    server.stop()


if __name__ == "__main__":
    main()
