"""History and usage: the history table and DataFrame, session usage, estimated token counts."""

import sqlite3

import nb_model
from nb_model import textwidth
from nb_model.cache.sqlite_store import open_sqlite
from nb_model.results import Generation, Usage

from conftest import notices, run
from helpers.cached import cached  # noqa: F401 (fixtures)
from helpers.new_kernel import text_of


OLD_SCHEMA = """
CREATE TABLE entries (key TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT, prompt_head TEXT,
    generation TEXT NOT NULL);
CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, session TEXT, profile TEXT,
    model TEXT, params TEXT, system TEXT, prompt TEXT, text TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, ttft_s REAL, latency_s REAL, cached INTEGER, cost_usd REAL, finish_reason TEXT,
    error TEXT);
"""


def test_usage_says_when_it_is_an_estimate():
    assert Usage(3, 4).label() == "3 → 4 tokens" and repr(Usage(3, 4)) == "Usage(prompt_tokens=3, completion_tokens=4)"
    guess = Usage(3, 4, estimated=True)
    assert guess.label() == "~3 → ~4 tokens" and "estimated=True" in repr(guess)
    gen = Generation(text="hi", usage=guess)
    assert Generation.from_dict(gen.to_dict()).usage.estimated  # a cache entry keeps the mark


def test_history_file_of_an_older_version_gains_the_column(tmp_path):
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("PRAGMA application_id=1851944241")  # ours, from before the column existed
        conn.execute("INSERT INTO history(time, prompt, prompt_tokens, completion_tokens, cached) "
                     "VALUES (1, 'old', 1, 2, 0)")
    warnings = []
    store = open_sqlite(path, warnings.append)
    assert store is not None and not warnings
    store.record({"time": 2.0, "prompt": "new", "prompt_tokens": 5, "completion_tokens": 9, "cached": 0,
                  "usage_estimated": 1})
    rows = store.history()
    assert [(r["prompt"], r["usage_estimated"]) for r in rows] == [("old", None), ("new", 1)]
    assert [r["usage_estimated"] for r in store.usage_rows()] == [None, 1]
    store.close()


ODD_USAGE = [{"prompt_tokens": -100, "completion_tokens": -5}, {"prompt_tokens": True, "completion_tokens": True},
             {"prompt_tokens": 10 ** 30, "completion_tokens": 10 ** 30}, {"prompt_tokens": 3.5, "completion_tokens": "7"}]


def test_odd_values_in_a_reply_are_shown_and_stored(shell, scripted_server, monkeypatch, tmp_path):
    """A lone UTF-16 surrogate in the text and token counts that are negative, booleans or huge: the cell
    shows the text, the counts are estimated instead, the SQLite cache and history take it all."""
    import json
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    nb_model.add_profile("odd", endpoint=scripted_server.url, price_per_1m=12.0)
    for n, usage in enumerate(ODD_USAGE):
        lines = [json.dumps({"text": "bad \ud800 text"}), json.dumps({"text": "", "finish_reason": "stop",
                                                                    "usage": usage})]
        scripted_server.replies = [(200, {"Content-Type": "application/x-ndjson"}, "\n".join(lines).encode())]
        res, cap = run(shell, f"%%generate -p odd -o g\nsay something odd {n}")
        g = shell.user_ns["g"]
        assert res.success and "Traceback" not in text_of(cap), text_of(cap)
        assert g.text == "bad \ufffd text" and g.text in cap.stdout and g.finish_reason == "stop"
        assert 0 < g.usage.prompt_tokens < 100 and 0 < g.usage.completion_tokens < 100 and 0 < g.cost_usd < 0.01
        assert not notices(cap)  # no cache warning: the store took it
        assert run(shell, f"%%generate -p odd -o g\nsay something odd {n}")[0].success
        assert shell.user_ns["g"].cached and shell.user_ns["g"].text == "bad \ufffd text"
    rows = nb_model.history()
    assert len(rows) == 2 * len(ODD_USAGE) and set(rows["text"]) == {"bad \ufffd text"}
    assert rows["prompt_tokens"].between(1, 99).all() and rows["completion_tokens"].between(1, 99).all()


def test_history_columns_align_by_display_width(shell, sandbox, use_endpoint, monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox)
    run(shell, "%%generate --max-tokens 20 --language zh\n请用一句话向小学生介绍灯塔的历史")
    run(shell, "%%generate --max-tokens 20\nDescribe a lighthouse")
    _, cap = run(shell, "%generate history")
    lines = cap.stdout.rstrip("\n").splitlines()
    assert len(lines) == 3 and "灯塔" in cap.stdout
    # the answer column starts at the same display column on every line
    starts = []
    for line in lines:
        head = line[:line.index("[sandbox]")] if "[sandbox]" in line else line[:line.index("answer")]
        starts.append(textwidth.width(head))
    assert len(set(starts)) == 1, lines


PROMPT = "%%generate --max-tokens 12 -o g\nTell me about {topic}"


def test_session_usage_counts_past_the_recent_rows_kept(shell, sandbox, tmp_path, monkeypatch):
    import nb_model
    from nb_model.cache.router import SessionLog
    config = tmp_path / "profiles.toml"  # no client-side rate limit: 2100 calls take seconds
    config.write_text(f'default = "busy"\n[profiles.busy]\nendpoint = "{sandbox.url}"\nqps = 0\n'
                      f'price_per_1m = 12.0\n')
    monkeypatch.setenv("NB_MODEL_CONFIG", str(config))
    kept = SessionLog().rows.maxlen  # the recent rows kept in memory (2000)
    n = kept + 100
    gens = nb_model.generate_many([f"item {i}" for i in range(n)], max_tokens=1, max_workers=8, progress=False)
    assert all(g.finish_reason != "error" for g in gens)
    _, cap = run(shell, "%generate usage")
    line = next(line for line in cap.stdout.splitlines() if line.startswith("this session")).split()
    tokens_in = sum(g.usage.prompt_tokens for g in gens)
    cost = sum(g.cost_usd for g in gens)
    assert line[2:6] == [str(n), "0", str(tokens_in), str(n)] and line[6] == f"${cost:.4f}"
    assert len(nb_model.history()) == kept  # the recent rows stay bounded


def test_history_api_returns_a_dataframe_with_every_generation(cached, sandbox):
    import nb_model
    run(cached, PROMPT)
    run(cached, PROMPT)
    sandbox.inject("401")
    run(cached, PROMPT.replace("-o g", "-o g -t 1.5"))  # errors are history too
    frame = nb_model.history()
    assert list(frame["cached"]) == [False, True, False]
    assert frame["finish_reason"].iloc[-1] == "error" and "HTTP 401" in frame["error"].iloc[-1]
    assert frame["prompt"].iloc[0] == "Tell me about tides" and frame["params"].iloc[0] == {"max_tokens": 12}
    assert str(frame["time"].dtype).startswith("datetime64")
