"""Packing several items in one request: splitting answers, fallbacks, caching per item."""

import math
import re

import pytest
from nb_model import packing
from nb_model.batch import generate_many, last_run
from nb_model.client import client_for
from nb_model.errors import ConfigError
from nb_model.sandbox import SandboxServer

from conftest import run
from helpers.docs_server import docs_server  # noqa: F401 (fixtures)


def reference(prompts, **params):
    c = client_for()
    return [c.generate(p, cache="off", **params).text for p in prompts]


TRICKY = ["### 2", "see ### 3 below", "### 1 #aaaaaa", "## heading\n### 4\ntext", "plain", "多语言 ### 5 答案"]


@pytest.mark.parametrize("n", range(2, 21))
def test_split_any_pack_size_even_with_the_delimiter_inside_answers(n):
    prompts = [f"item {k}" for k in range(n)]
    tag = packing.tag_of(prompts)
    answers = [f"answer {k}: {TRICKY[k % len(TRICKY)]}" for k in range(n)]
    text = "\n\n".join(f"{packing.header(k, tag)}\n{a}" for k, a in enumerate(answers, 1))
    assert packing.split_answer(text, n, tag) == answers
    built = packing.build(prompts, 20)
    assert packing.parse_request(built) == (prompts, 20)
    dropped = text.replace(f"{packing.header(n, tag)}\n", "")  # the last header lost: n-1 swallowed n
    assert packing.split_answer(dropped, n, tag) == answers[:-2] + [None, None]
    doubled = text + f"\n\n{packing.header(1, tag)}\nagain"
    assert packing.split_answer(doubled, n, tag)[0] is None
    cut = packing.split_answer(text, n, tag, truncated=True)
    assert cut[:-1] == answers[:-1] and cut[-1] is None


def test_apportion_sums_exactly():
    for total in (0, 1, 7, 100, 12345):
        for weights in ([1], [1, 1, 1], [5, 0, 3, 9], [0, 0], [2] * 17):
            shares = packing.apportion(total, weights)
            assert sum(shares) == total and len(shares) == len(weights)


@pytest.mark.parametrize("size", [2, 7, 10])
def test_packed_answers_equal_the_unpacked_ones(size, use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server, protocol="openai-completions")  # reports usage: apportioned shares can be checked
        prompts = [f"Name a river, number {i}" for i in range(23)]
        got = generate_many(prompts, pack=size, cache="off", progress=False, max_tokens=20)
        stats = server.wait_idle()
        assert stats["requests"] == math.ceil(23 / size) and last_run["unpacked"] == 0
        assert [g.text for g in got] == reference(prompts, max_tokens=20)
        assert sum("pack" in g.params for g in got) == 23 - (23 % size == 1)  # a lone leftover goes alone
        assert got[0].params["pack"] == f"1/{size}"
        assert sum(g.usage.completion_tokens for g in got) == stats["tokens_out"]  # apportioned, sums up
        pack_prompts = [packing.build(prompts[a:a + size], 20) if a + 1 < 23 else prompts[a]
                        for a in range(0, 23, size)]
        assert sum(g.usage.prompt_tokens for g in got) == sum(server.engine.count_tokens(p) for p in pack_prompts)
        cost = sum(g.cost_usd for g in got)
        assert cost == pytest.approx(sum(g.usage.total_tokens for g in got) * client_for().profile.price_per_1m / 1e6)


def test_broken_packs_fall_back_to_single_requests(use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        prompts = [f"Describe a stone, number {i}" for i in range(30)]
        server.inject("pack-drop")
        server.inject("pack-merge")
        got = generate_many(prompts, pack=10, cache="off", progress=False, max_tokens=20)
        stats = server.wait_idle()
        assert [g.text for g in got] == reference(prompts, max_tokens=20)  # complete and in order
        assert last_run["unpacked"] == 4  # the dropped/merged item and the one before it, twice
        assert stats["requests"] == 3 + 4 and all(g.finish_reason in ("stop", "length") for g in got)
        alone = [g for g in got if "pack" not in g.params]
        assert len(alone) == 4


def test_a_pack_refused_as_a_whole_goes_item_by_item(use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        server.inject("400")
        got = generate_many([f"q {i}" for i in range(4)], pack=4, cache="off", progress=False, max_tokens=10)
        assert server.wait_idle()["requests"] == 1 + 4
        assert [g.text for g in got] == reference([f"q {i}" for i in range(4)], max_tokens=10)


def test_packed_items_are_cached_and_recorded_one_by_one(use_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        prompts = [f"Name a bird, number {i}" for i in range(6)]
        first = generate_many(prompts, pack=3, progress=False, max_tokens=15)
        assert server.wait_idle()["requests"] == 2 and not any(g.cached for g in first)
        again = client_for().generate(prompts[4], max_tokens=15)  # an unpacked call of the same prompt
        assert again.cached and again.text == first[4].text and server.stats()["requests"] == 2
        packed_again = generate_many(prompts, pack=3, progress=False, max_tokens=15)
        assert all(g.cached for g in packed_again) and server.stats()["requests"] == 2
        from nb_model.cache.router import recent_history
        rows = [r for r in recent_history() if r["prompt"] in prompts and not r["cached"]]
        assert sorted(r["params"].get("pack") for r in rows) == ["1/3", "1/3", "2/3", "2/3", "3/3", "3/3"]
        assert not any("numbered items" in (r["prompt"] or "") for r in recent_history())  # items, not packs


def test_auto_packs_only_short_prompts(use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        long_one = "Summarize this: " + "a very long sentence about rivers and stones " * 60
        prompts = ["Name a fish", "Name a tree", long_one, "Name a star"]
        got = generate_many(prompts, pack="auto", cache="off", progress=False, max_tokens=20)
        assert server.wait_idle()["requests"] == 2  # the three short ones together, the long one alone
        assert "pack" not in got[2].params and got[0].params["pack"] == "1/3"
        with pytest.raises(ConfigError, match="pack must be"):
            generate_many(prompts, pack=0)
        with pytest.raises(ConfigError, match="pack must be"):
            generate_many(prompts, pack="all")


def test_pack_size_respects_the_answer_budget_and_cap(use_endpoint):
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        got = generate_many([f"p {i}" for i in range(12)], pack=10, cache="off", progress=False, max_tokens=500)
        # 500 tokens per answer (+ a header line): at most 4 per pack within the 2048-token cap
        assert server.wait_idle()["requests"] == 3 and all(g.finish_reason in ("stop", "length") for g in got)


def _numbered_model(drop: int | None = None):
    """A scripted model at the minimal server: reads the numbered items, answers each with text that
    itself contains '### 2', leaves out item `drop`; single prompts get a plain answer."""
    def answer(prompt):
        m = re.search(r'"### k #([a-z]{6})"', prompt)
        if not m:
            return f"alone: {prompt}"
        tag = m.group(1)
        items = re.findall(rf"^### (\d+) #{tag}\n(.*?)(?=\n\n### \d+ #{tag}\n|\Z)", prompt, re.S | re.M)
        return "\n\n".join(f"### {k} #{tag}\n## note\n### 2\n{text.upper()}" for k, text in items
                           if int(k) != drop)
    return answer


def test_packing_at_a_minimal_docs_server(docs_server):  # noqa: F811
    server = docs_server(answer=_numbered_model())
    prompts = [f"word {i}" for i in range(8)]
    got = generate_many(prompts, pack=4, cache="off", progress=False, max_tokens=20)
    assert [g.text for g in got] == [f"## note\n### 2\nWORD {i}" for i in range(8)]
    assert len(server.arrivals) == 2
    server = docs_server(answer=_numbered_model(drop=3))
    got = generate_many(prompts, pack=4, cache="off", progress=False, max_tokens=20)
    texts = [g.text for g in got]
    assert texts[2] == "alone: word 2" and texts[6] == "alone: word 6"  # dropped: asked alone
    assert texts[1] == "alone: word 1"  # the section before a gap may have swallowed it: asked alone too
    assert texts[0] == "## note\n### 2\nWORD 0" and len(server.arrivals) == 2 + 4


def test_over_magic_with_pack(shell, use_endpoint):
    import pandas as pd
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        shell.user_ns["frame"] = pd.DataFrame({"animal": ["owl", "fox", "eel", "elk", "yak"]})
        cell = "%%generate --over frame --pack 5 --out facts --max-tokens 15\nOne fact about the {animal}."
        res, cap = run(shell, cell)
        assert res.success, cap.stdout + cap.stderr
        facts = shell.user_ns["facts"]
        assert [g.text for g in facts] == reference([f"One fact about the {a}." for a in frame_animals()],
                                                    max_tokens=15)
        assert server.wait_idle()["requests"] == 1 + 5  # one pack (then the reference calls)
        res, cap = run(shell, "%%generate --over frame --pack lots\n{animal}")
        assert not res.success and "--pack takes" in cap.stderr and "Traceback" not in cap.stderr


def frame_animals():
    return ["owl", "fox", "eel", "elk", "yak"]


def test_each_batch_carries_its_own_figures_when_batches_run_at_once(use_endpoint):
    """Two batches at once in one process (threads): each result's `.stats` are its own, not the other's."""
    import threading

    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        got: dict = {}
        started = threading.Barrier(2)

        def batch(name, pack):
            started.wait()
            got[name] = generate_many([f"{name} stone {i}" for i in range(30)], cache="off", progress=False,
                                      max_tokens=20, pack=pack)

        threads = [threading.Thread(target=batch, args=("by ten", 10)),
                   threading.Thread(target=batch, args=("by five", 5))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        server.wait_idle()
    assert got["by ten"].stats["packs"] == 3 and got["by five"].stats["packs"] == 6
    assert all(r.stats["unpacked"] == 0 and r.stats["peak_in_flight"] >= 1 for r in got.values())
    assert last_run in (got["by ten"].stats, got["by five"].stats)  # a copy of whichever ended last
    assert all(isinstance(r, list) and len(r) == 30 and all(g.text for g in r) for r in got.values())


def test_a_series_batch_has_its_figures_in_attrs(use_endpoint):
    import pandas as pd
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server)
        col = pd.Series([f"river {i}" for i in range(12)], index=[f"r{i}" for i in range(12)], name="q")
        got = generate_many(col, pack=4, cache="off", progress=False, max_tokens=20)
    assert list(got.index) == list(col.index) and got.attrs["stats"]["packs"] == 3
