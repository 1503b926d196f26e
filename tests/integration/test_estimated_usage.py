"""Token counts nb_model estimated (the server reported none) are marked as estimates everywhere they are
shown and kept: the result, the cache entry, the history file (older files gain the column)."""
import sqlite3

from nb_model.cache.sqlite_store import open_sqlite
from nb_model.results import Generation, Usage

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
