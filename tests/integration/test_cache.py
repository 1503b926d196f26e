"""The per-notebook cache and history: a real SQLite file on disk, the real magic, the sandbox over HTTP."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import missing_part, notices, requests_seen, run, shown

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "%%generate --max-tokens 12 -o g\nTell me about {topic}"


@pytest.fixture
def cached(shell, sandbox, use_endpoint, monkeypatch):
    """The magic against the sandbox with the default cache on (the fallback file in the test's folder)."""
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox)
    shell.user_ns["topic"] = "tides"
    return shell


def fallback_file() -> Path:
    return Path.cwd() / ".nb_model" / "cache.sqlite"


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_hit_replays_without_a_request(cached, sandbox):
    res, first = run(cached, PROMPT)
    assert res.success and requests_seen(sandbox, 1) == 1
    g1 = cached.user_ns["g"]
    res, second = run(cached, PROMPT)
    g2 = cached.user_ns["g"]
    assert res.success and requests_seen(sandbox, 1) == 1  # nothing new reached the server
    assert g2.cached and not g1.cached and g2.text == g1.text and g2.text in second.stdout
    assert (g2.latency_s, g2.ttft_s, g2.request_id) == (g1.latency_s, g1.ttft_s, g1.request_id)  # original timings
    footer = shown(second)[-1]
    assert g1.cost_usd > 0 and f" · $0 (saved ${g1.cost_usd:.4f}) · cached" in footer  # a hit costs nothing
    assert f"finish: length · ${g1.cost_usd:.4f}\n" in shown(first)[-1] and "cached" not in shown(first)[-1]
    assert fallback_file().is_file() and rows(fallback_file(), "entries") == 1
    # the Python API replays a hit through the same stream
    import nb_model
    stream = nb_model.stream("Tell me about tides", max_tokens=12)
    assert list(stream) == [g1.text] and stream.generation.cached


def test_refresh_replaces_and_no_cache_bypasses(cached, sandbox):
    run(cached, PROMPT)
    original = cached.user_ns["g"]
    res, _ = run(cached, PROMPT.replace("-o g", "-o g --refresh"))
    refreshed = cached.user_ns["g"]
    assert res.success and requests_seen(sandbox, 2) == 2 and not refreshed.cached
    assert refreshed.request_id != original.request_id
    run(cached, PROMPT)
    assert cached.user_ns["g"].cached and cached.user_ns["g"].request_id == refreshed.request_id  # replaced
    res, _ = run(cached, PROMPT.replace("-o g", "-o g --no-cache"))
    bypass = cached.user_ns["g"]
    assert res.success and requests_seen(sandbox, 3) == 3 and not bypass.cached
    run(cached, PROMPT)
    assert cached.user_ns["g"].request_id == refreshed.request_id  # --no-cache did not write
    assert rows(fallback_file(), "entries") == 1 and rows(fallback_file(), "history") == 5
    _, cap = run(cached, "%generate cache stats")  # the refresh went to the network: a miss; --no-cache: neither
    assert "2 hits, 2 misses" in cap.stdout
    res, cap = run(cached, PROMPT.replace("-o g", "--refresh --no-cache"))
    assert not res.success and "either --refresh or --no-cache" in cap.stderr


VARIANTS = ["", "-t 0.2", "-t 0.8", "--max-tokens 13", "--top-p 0.5", "--top-k 3", "--language fr", "--seed 7",
            "-s 'Be brief.'", "-s 'Be long.'", "-m other-model"]


def test_key_changes_with_every_setting_and_never_serves_stale(cached, sandbox):
    for i, option in enumerate(VARIANTS, 1):
        res, cap = run(cached, PROMPT.replace("-o g", f"-o g {option}"))
        assert res.success, cap.stderr
        assert requests_seen(sandbox, i) == i and not cached.user_ns["g"].cached, option
    cached.user_ns["topic"] = "waves"  # the prompt after interpolation is in the key
    run(cached, PROMPT)
    assert requests_seen(sandbox, len(VARIANTS) + 1) == len(VARIANTS) + 1
    cached.user_ns["topic"] = "tides"
    texts = {}
    for option in VARIANTS:  # every variant again: all hits, each its own answer
        run(cached, PROMPT.replace("-o g", f"-o g {option}"))
        assert cached.user_ns["g"].cached, option
        texts[option] = cached.user_ns["g"].text
    assert requests_seen(sandbox, len(VARIANTS) + 1) == len(VARIANTS) + 1
    assert texts["-t 0.2"] != texts["-t 0.8"] or texts["--seed 7"] != texts[""]
    run(cached, PROMPT.replace("-o g", "-o g -t 0.8 --no-stream"))  # streaming is not in the key
    assert cached.user_ns["g"].cached and requests_seen(sandbox, len(VARIANTS) + 1) == len(VARIANTS) + 1


def test_identity_and_key_hold_no_secret(monkeypatch):
    from nb_model.cache import cache_key
    from nb_model.client import EMBEDDED, Client
    from nb_model.config import Profile
    monkeypatch.setenv("MODEL_API_KEY", "sk-secret-" + "z" * 20)
    a = Client(Profile("a", None, "seed"))
    b = Client(Profile("b", None, "seed"))
    spec = a.spec("hi", temperature=0.5)
    assert a.identity(spec)["endpoint"] == EMBEDDED and a.identity(spec) == b.identity(spec)
    assert "sk-secret" not in repr(a.identity(spec))
    key = cache_key(a.identity(spec))
    assert len(key) == 64 and key == cache_key(dict(reversed(list(a.identity(spec).items()))))
    assert key != cache_key(a.identity(a.spec("hi", temperature=0.50001)))


def test_per_notebook_file_from_the_session_name(cached, sandbox, tmp_path, monkeypatch):
    lessons = tmp_path / "course"
    lessons.mkdir()
    monkeypatch.setenv("JPY_SESSION_NAME", str(lessons / "Lesson 1.ipynb"))
    run(cached, PROMPT)
    assert (lessons / ".nb_model" / "Lesson 1.sqlite").is_file() and not fallback_file().exists()
    _, cap = run(cached, "%generate cache path")
    assert str(lessons / ".nb_model" / "Lesson 1.sqlite") in cap.stdout and "beside notebook" in cap.stdout
    # another notebook: its own file, so its own misses
    monkeypatch.setenv("JPY_SESSION_NAME", "course/lesson2.ipynb")  # relative: beside the kernel's cwd
    run(cached, PROMPT)
    assert (tmp_path / ".nb_model" / "lesson2.sqlite").is_file() and requests_seen(sandbox, 2) == 2
    # without the env var the kernel's __session__ says the same
    monkeypatch.delenv("JPY_SESSION_NAME")
    cached.user_ns["__session__"] = str(lessons / "Lesson 1.ipynb")
    try:
        run(cached, PROMPT)
    finally:
        del cached.user_ns["__session__"]
    assert cached.user_ns["g"].cached and requests_seen(sandbox, 2) == 2


def test_env_override_and_file_subcommand(cached, sandbox, tmp_path, monkeypatch):
    chosen = tmp_path / "shared" / "team.sqlite"
    monkeypatch.setenv("NB_MODEL_CACHE", str(chosen))
    run(cached, PROMPT)
    assert chosen.is_file() and rows(chosen, "entries") == 1 and not fallback_file().exists()
    other = tmp_path / "elsewhere.sqlite"
    res, cap = run(cached, f"%generate cache --file {other}")
    assert res.success and str(other) in cap.stdout
    run(cached, PROMPT)  # the switched file has no entry yet: a new call, stored there
    assert requests_seen(sandbox, 2) == 2 and rows(other, "entries") == 1
    res, cap = run(cached, "%generate cache --file")
    assert not res.success and "give the cache file" in cap.stderr


def test_file_subcommand_takes_a_folder_off_and_auto_like_the_env_var(cached, sandbox, tmp_path):
    folder = tmp_path / "team"
    folder.mkdir()
    res, cap = run(cached, f"%generate cache --file {folder}")  # a folder: its cache.sqlite, as NB_MODEL_CACHE
    assert res.success and cap.stdout.strip() == f"cache file: {folder / 'cache.sqlite'}" and notices(cap) == []
    run(cached, PROMPT)
    assert rows(folder / "cache.sqlite", "entries") == 1 and not fallback_file().exists()
    res, cap = run(cached, "%generate cache --file off")
    assert res.success and "caching and history on disk are off" in cap.stdout and "--file auto" in cap.stdout
    run(cached, PROMPT)
    assert not cached.user_ns["g"].cached and requests_seen(sandbox, 2) == 2
    assert not (tmp_path / "off").exists() and not fallback_file().exists()
    _, cap = run(cached, "%generate cache path")
    assert "none  (%generate cache --file off)" in cap.stdout
    res, cap = run(cached, "%generate cache --file auto")  # back to automatic placement
    assert res.success and f"cache file: {fallback_file()} (fallback: current folder" in cap.stdout
    run(cached, PROMPT)
    assert requests_seen(sandbox, 3) == 3 and rows(fallback_file(), "entries") == 1
    _, cap = run(cached, "%generate help")
    assert "--file PATH|DIR|off|auto" in cap.stdout
    from nb_model import cache
    from nb_model.commands import CACHE_USAGE
    assert CACHE_USAGE.split(" | ")[-1] in cache.__doc__  # the package docs name every form of --file


def test_subcommands_stats_list_clear_history_usage(cached, sandbox):
    for topic in ("tides", "moons", "tides"):
        cached.user_ns["topic"] = topic
        run(cached, PROMPT)
    _, cap = run(cached, "%generate cache stats")
    assert "entries          2" in cap.stdout and "1 hits, 2 misses" in cap.stdout and "KB" in cap.stdout
    _, cap = run(cached, "%generate cache list")
    assert "Tell me about moons" in cap.stdout and "Tell me about tides" in cap.stdout
    _, cap = run(cached, "%generate history 2")
    lines = cap.stdout.strip().splitlines()
    assert len(lines) == 3 and "moons" in lines[1] and "cached" in lines[2]
    assert lines[0].split() == ["time", "model", "tokens", "latency", "finish", "prompt", "answer"]
    assert all(re.search(r"  \d+→\d+ +\d+\.\d\d s  +(length|stop|cached)  ", line) for line in lines[1:]), lines
    _, cap = run(cached, "%generate usage")
    session_line = next(line for line in cap.stdout.splitlines() if line.startswith("this session"))
    fresh = [r for r in __import__("nb_model").history().to_dict("records") if not r["cached"]]
    cost = sum(r["cost_usd"] for r in fresh)
    assert cost > 0 and f"${cost:.4f}" in session_line  # seed price: $12 per 1M tokens
    assert session_line.split()[2:4] == ["2", "1"]  # 2 calls, 1 cached
    _, cap = run(cached, "%generate cache clear --older-than 1")
    assert "removed 0" in cap.stdout
    _, cap = run(cached, "%generate cache clear")
    assert "removed 2 cache entries" in cap.stdout and rows(fallback_file(), "entries") == 0
    assert rows(fallback_file(), "history") == 3  # clearing the cache keeps the history
    run(cached, PROMPT)
    for bad, expect in [("cache clear --older-than soon", "number of days"), ("cache wipe", "unknown cache command"),
                        ("cache clear --older-than -1", "number of days (0 or more), got '-1'"),
                        ("cache clear --older-than nan", "number of days"),
                        ("cache clear --older-than inf", "number of days"),
                        ("cache stats extra", "unexpected 'extra'"), ("usage extra", "unexpected 'extra'"),
                        ("history -3", "positive number")]:
        res, cap = run(cached, f"%generate {bad}")
        assert not res.success and expect in cap.stderr and "Traceback" not in cap.stdout + cap.stderr, bad
        assert len(cap.stderr.strip().splitlines()) == 1 and not cap.stdout, bad
    assert rows(fallback_file(), "entries") == 1  # nothing was cleared by a bad value


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


def _generate_many(tag: str, n: int) -> None:
    import nb_model
    for i in range(n):
        nb_model.generate(f"{tag} item {i}", max_tokens=4)


WORKER = """
import sys, time, pathlib
import nb_model
print("ready", flush=True)
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.005)
for i in range(int(sys.argv[3])):
    nb_model.generate(f"{sys.argv[1]} item {i}", max_tokens=4)
"""


def test_four_threads_and_four_processes_lose_nothing(sandbox, tmp_path, monkeypatch):
    config = tmp_path / "profiles.toml"  # no client-side rate limit: the writers really overlap
    config.write_text(f'default = "busy"\n[profiles.busy]\nendpoint = "{sandbox.url}"\nqps = 0\n')
    monkeypatch.setenv("NB_MODEL_CONFIG", str(config))
    path = tmp_path / "busy.sqlite"
    monkeypatch.setenv("NB_MODEL_CACHE", str(path))
    go, n = tmp_path / "go", 30
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"proc{i}", str(go), str(n)], env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    threads = [threading.Thread(target=_generate_many, args=(f"thread{i}", n)) for i in range(4)]
    go.touch()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert rows(path, "entries") == rows(path, "history") == 8 * n
    with sqlite3.connect(path) as conn:
        heads = {r[0] for r in conn.execute("SELECT prompt_head FROM entries")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert heads == {f"{who}{i} item {j}" for who in ("proc", "thread") for i in range(4) for j in range(n)}


WRITER = """
import sys
from pathlib import Path
from nb_model.cache.sqlite_store import open_sqlite
from nb_model.results import Generation
store = open_sqlite(Path(sys.argv[1]), print)
gen = Generation(text="x" * 200_000, model="m")
i = 0
while True:
    store.store(f"key{i}", gen, f"prompt {i}")
    store.record({"time": i, "prompt": f"prompt {i}", "text": gen.text, "cached": 0})
    i += 1
    if i == 20:
        print("writing", flush=True)
"""


def test_sigkill_mid_write_leaves_a_readable_cache(tmp_path):
    from nb_model.cache.sqlite_store import open_sqlite
    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    warnings = []
    store = open_sqlite(path, warnings.append)
    assert store is not None and warnings == []
    count = store.stats()["entries"]
    assert count >= 20 and store.lookup(f"key{count - 1}").text == "x" * 200_000
    assert len(store.history()) in (count - 1, count)  # killed between the entry and its history row
    store.close()


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096:12288] = b"\xde\xad\xbe\xef" * 2048
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["garbage", "foreign", "damaged"])
def test_corrupt_or_foreign_file_is_moved_aside_once(cached, sandbox, kind):
    path = fallback_file()
    path.parent.mkdir()
    if kind == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
    elif kind == "foreign":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE users (name TEXT)")
    else:
        for topic in ("a", "b", "c", "d", "e", "f"):
            cached.user_ns["topic"] = topic * 3000
            run(cached, PROMPT)
        from nb_model import cache
        cache.reset()  # close it, as a new kernel would find it
        _damage(path)
        sandbox.reset()
    before = path.read_bytes()
    cached.user_ns["topic"] = "tides"
    res1, cap1 = run(cached, PROMPT)
    res2, cap2 = run(cached, PROMPT)
    assert res1.success and res2.success and "Traceback" not in cap1.stdout + cap1.stderr
    warned = notices(cap1) + notices(cap2)
    assert len(warned) == 1 and "moved it to cache.sqlite.corrupt-" in warned[0], warned
    aside = list(path.parent.glob("cache.sqlite.corrupt-*"))
    assert [p for p in aside if not p.name.endswith(("-wal", "-shm"))][0].read_bytes() == before
    assert cached.user_ns["g"].cached and requests_seen(sandbox, 1) == 1  # the fresh cache works


@pytest.fixture
def read_only(tmp_path):
    """Make folders unwritable, even for root (immutable flag where chmod is not enough)."""
    made = []

    def lock(folder: Path) -> None:
        folder.chmod(0o555)
        made.append(folder)
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            return
        probe.unlink()
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            missing_part("cannot make a folder read-only here (root without chattr support)")
    yield lock
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("where", ["notebook folder", "cache folder"])
def test_read_only_location_means_no_cache_and_one_warning(cached, sandbox, tmp_path, monkeypatch, read_only, where):
    course = tmp_path / "readonly"
    course.mkdir()
    monkeypatch.setenv("JPY_SESSION_NAME", str(course / "lesson.ipynb"))
    if where == "cache folder":  # an existing but empty cache folder (an existing file is read: see reliability)
        (course / ".nb_model").mkdir()
        read_only(course / ".nb_model")
    read_only(course)
    results = [run(cached, PROMPT) for _ in range(2)]
    assert all(res.success for res, _ in results)
    assert all("[sandbox]" in cap.stdout and "Traceback" not in cap.stderr for _, cap in results)
    warned = [w for _, cap in results for w in notices(cap)]
    assert len(warned) == 1 and "caching and history on disk are off" in warned[0], warned
    assert requests_seen(sandbox, 2) == 2
    _, cap = run(cached, "%generate history")
    assert len(cap.stdout.strip().splitlines()) == 3  # this session's history still answers


def test_api_key_never_reaches_the_file(shell, keyed_sandbox, use_endpoint, monkeypatch):
    key = "sk-test-" + "k" * 24
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("MODEL_API_KEY", key)
    use_endpoint(keyed_sandbox)
    res, cap = run(shell, "%%generate --max-tokens 8\nSay something memorable")
    assert res.success, cap.stderr
    monkeypatch.setenv("MODEL_API_KEY", "sk-wrong-" + "w" * 20)
    run(shell, "%%generate --max-tokens 8 -t 0.4\nSay a third thing")  # a 401 row
    files = list(fallback_file().parent.iterdir())
    data = b"".join(p.read_bytes() for p in files)
    assert b"Say something memorable" in data and b"HTTP 401" in data  # the test can see what is written
    assert key.encode() not in data and b"sk-wrong" not in data and b"kkkkkkkkkkkk" not in data
