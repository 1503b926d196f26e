"""Retrieval: recall@5 per language on the project's test corpus, index build time for ~10 MB of text, query p50.

    python bench/bench_retrieval.py

Recall is measured on `tests/data/rag/` (30 questions, each with its gold passage) for the shipped Chinese
segmentation (character bigrams) next to single characters and, when installed, jieba's dictionary
segmentation: the figure that chose bigrams. Build time: a generated folder of ~10 MB (English and Chinese
files), cold (every file read, chunked and tokenized) against warm (the on-disk index cache, no file read),
both including the BM25 build of the first search.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "rag"


def recall_at(k: int, tokenize, questions, passages) -> dict[str, float]:
    import bm25s
    model = bm25s.BM25()
    model.index([tokenize(p.text) for p in passages], show_progress=False)
    hits: dict[str, list[int]] = {}
    for q in questions:
        scores = model.get_scores(tokenize(q["question"]) or [""])
        top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        ok = any(passages[i].source == q["source"] and q["contains"] in passages[i].text and scores[i] > 0
                 for i in top)
        hits.setdefault(q["lang"], []).append(int(ok))
    return {lang: sum(v) / len(v) for lang, v in hits.items()}


def corpus(folder: Path, megabytes: float, seed: int = 7) -> int:
    """Write ~`megabytes` of paragraphs (two thirds English, one third Chinese) in 100 KB files."""
    rng = random.Random(seed)
    en = ("tenant landlord notice deposit greenhouse tomato ventilation telescope dome ticket bread oven "
          "starter library permit budget schedule invoice harbor engine valve pressure sensor river bridge "
          "winter summer meeting contract clause payment delivery warranty").split()
    zh = "租金押金合同通知温室番茄通风望远镜门票面包烤箱图书馆预约发票港口发动机压力传感器河流桥梁冬季夏季会议付款交付保修"
    total, n = 0, 0
    while total < megabytes * 1_000_000:
        chinese = n % 3 == 2
        paras = []
        for _ in range(120):
            if chinese:
                paras.append("".join(rng.choice(zh) for _ in range(rng.randint(60, 160))) + "。")
            else:
                paras.append(" ".join(rng.choice(en) for _ in range(rng.randint(40, 110))).capitalize() + ".")
        text = "\n\n".join(paras)
        (folder / f"doc{n:04d}.{'txt' if chinese else 'md'}").write_text(text, encoding="utf-8")
        total += len(text.encode("utf-8"))
        n += 1
    return total


def main() -> None:
    from nb_model.retrieval import Index
    from nb_model.retrieval.text import words

    questions = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))
    idx = Index(DATA, cache=False)
    rows = [("segmentation of Chinese", "recall@5 en", "recall@5 zh", "recall@1 en", "recall@1 zh")]
    variants = [("character bigrams (shipped)", words), ("single characters", lambda t: words(t, bigrams=False))]
    try:
        import jieba
        jieba.setLogLevel(60)
        variants.append(("jieba words", lambda t: [w for w in (s.strip().lower() for s in jieba.cut(t)) if w]))
    except ImportError:
        pass
    for name, fn in variants:
        r5, r1 = recall_at(5, fn, questions, idx.passages), recall_at(1, fn, questions, idx.passages)
        rows.append((name, f"{r5['en']:.2f}", f"{r5['zh']:.2f}", f"{r1['en']:.2f}", f"{r1['zh']:.2f}"))
    table(f"recall on tests/data/rag ({len(questions)} questions, {len(idx.passages)} passages; target "
          "recall@5 >= 0.9 per language)", rows)

    tmp = Path(tempfile.mkdtemp(prefix="nb_model_bench_rag_"))
    try:
        docs = tmp / "docs"
        docs.mkdir()
        size = corpus(docs, 10)
        os.environ["NB_MODEL_CACHE"] = str(tmp / "cache")
        t = time.perf_counter()
        cold = Index(docs, progress=False)
        cold.search("tenant deposit notice")
        t_cold = time.perf_counter() - t
        t = time.perf_counter()
        again = Index(docs, progress=False)
        again.search("tenant deposit notice")
        t_again = time.perf_counter() - t
        from nb_model.retrieval import index
        index._MEMORY.clear()  # as in a new kernel: only the on-disk cache
        t = time.perf_counter()
        warm = Index(docs, progress=False)
        warm.search("tenant deposit notice")
        t_warm = time.perf_counter() - t
        queries = ["tenant deposit notice", "greenhouse ventilation winter", "telescope dome ticket",
                   "合同押金通知", "温室番茄通风", "engine valve pressure sensor", "图书馆预约"] * 6
        lat = []
        for q in queries:
            t = time.perf_counter()
            warm.search(q, k=5)
            lat.append(time.perf_counter() - t)
        table(f"index of {size / 1e6:.1f} MB in {cold.stats['files']} files, {len(cold)} passages", [
            ("what", "time", "files read"),
            ("cold build + first search", f"{t_cold:.2f} s", cold.stats["read"]),
            ("warm build (index cache) + first search", f"{t_warm:.2f} s", warm.stats["read"]),
            ("warm / cold", f"{t_warm / t_cold:.2f}x", ""),
            ("re-run in the same kernel (files unchanged) + first search", f"{t_again * 1000:.0f} ms",
             again.stats["read"]),
            (f"query p50 ({len(lat)} queries, k=5)", f"{statistics.median(lat) * 1000:.1f} ms", ""),
        ])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
