"""The per-notebook SQLite cache: hits, keys, subcommands, concurrency, damage, what is never cached."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nb_model
import pytest
from nb_model.errors import ConfigError
from nb_model.sandbox import SandboxServer

from conftest import missing_part, notices, requests_seen, run, run_interrupted, shown
from helpers.cached import cached  # noqa: F401 (fixtures)
from helpers.client import client
from helpers.new_kernel import new_kernel  # noqa: F401 (fixtures)
from helpers.new_kernel import text_of
from helpers.seed_server import cache_on  # noqa: F401 (fixtures)


ROOT = Path(__file__).resolve().parents[2]


PROMPT = "%%generate --max-tokens 12 -o g\nTell me about {topic}"


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
    """Make folders unwritable, even for root (read_only flag where chmod is not enough)."""
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


PROCS, TRIALS, PER_TRIAL = 4, 50, 5


def _worker(folder: str, barrier, who: int, out) -> None:
    """One process: for every trial, open the trial's new file together with the others and write to it."""
    from nb_model.cache.sqlite_store import open_sqlite
    from nb_model.results import Generation
    warnings, written = [], 0
    for trial in range(TRIALS):
        barrier.wait()
        store = open_sqlite(Path(folder) / f"trial{trial}.sqlite", warnings.append)
        if store is None:
            continue
        for j in range(PER_TRIAL):
            store.store(f"{who}-{j}", Generation(text=f"answer {who} {j}", model="m"), f"p{who}{j}")
            written += 1
        store.close()
    out.put((who, written, warnings))


def test_four_processes_creating_one_new_file_fifty_times_lose_nothing(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(PROCS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), barrier, who, out)) for who in range(PROCS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    warnings = [w for _, _, ws in results for w in ws]
    assert warnings == []
    assert sum(written for _, written, _ in results) == PROCS * TRIALS * PER_TRIAL
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []  # nothing moved aside
    for trial in range(TRIALS):
        with sqlite3.connect(tmp_path / f"trial{trial}.sqlite") as conn:
            assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == PROCS * PER_TRIAL, trial


FILL_WRITER = """
import sys, time
from pathlib import Path
from nb_model.cache.sqlite_store import open_sqlite
from nb_model.results import Generation
path, who, log = Path(sys.argv[1]), sys.argv[2], open(sys.argv[3], "a", buffering=1)
while time.time() < float(sys.argv[4]):
    time.sleep(0.001)
store = open_sqlite(path, lambda w: print("WARN", w, flush=True))
i = 0
while True:
    store.store(f"{who}-{i}", Generation(text="x" * 2000, model="m"), f"p {i}")
    log.write(f"{who}-{i}\\n")  # written after the commit: every key logged is in the file
    i += 1
"""


KILL_TRIALS = 8


def test_kill_9_while_four_processes_create_and_fill_one_file(tmp_path):
    """Each trial: four processes open one new file at the same moment, write, and are killed with -9."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for trial in range(KILL_TRIALS):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        path, start = folder / "shared.sqlite", time.time() + 1.0
        logs = [folder / f"w{who}.log" for who in range(PROCS)]
        procs = [subprocess.Popen([sys.executable, "-c", FILL_WRITER, str(path), str(who), str(logs[who]), repr(start)],
                                  env=env, stdout=subprocess.PIPE, text=True) for who in range(PROCS)]
        time.sleep(max(0.0, start - time.time()) + 0.4)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        output = "".join(p.communicate()[0] for p in procs)
        logged = {line for log in logs if log.exists() for line in log.read_text().split()}
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {r[0] for r in conn.execute("SELECT key FROM entries")}
        lost = logged - stored
        assert logged and not lost, f"trial {trial}: {len(lost)} of {len(logged)} entries reported written are lost"
        assert [p.name for p in folder.iterdir() if "corrupt" in p.name] == [], trial
        assert "WARN" not in output, (trial, output)


def test_a_store_whose_file_was_moved_reopens_the_path_with_one_warning(tmp_path):
    from nb_model.cache.sqlite_store import _move_aside, open_sqlite
    from nb_model.results import Generation
    path, warnings = tmp_path / "c.sqlite", []
    store = open_sqlite(path, warnings.append)
    store.store("a", Generation(text="one", model="m"), "a")
    aside = _move_aside(path)  # what another process does to a file it takes for foreign
    store.store("b", Generation(text="two", model="m"), "b")
    store.store("c", Generation(text="three", model="m"), "c")
    assert len(warnings) == 1 and "moved or replaced by another process; re-opened it" in warnings[0]
    assert "\n" not in warnings[0]
    with sqlite3.connect(path) as conn:
        assert {r[0] for r in conn.execute("SELECT key FROM entries")} == {"b", "c"}
    assert store.lookup("b").text == "two"
    store.close()
    assert aside is not None and aside.exists()


def test_two_moves_in_one_second_keep_both_files(tmp_path):
    from nb_model.cache.sqlite_store import _move_aside
    path, names = tmp_path / "c.sqlite", []
    for content in (b"first", b"second"):
        path.write_bytes(content)
        names.append(_move_aside(path))
    assert names[0] != names[1] and [n.read_bytes() for n in names] == [b"first", b"second"]


def test_damaged_file_warning_is_one_line(tmp_path):
    from nb_model.cache.sqlite_store import open_sqlite
    from nb_model.results import Generation
    path, warnings = tmp_path / "c.sqlite", []
    store = open_sqlite(path, warnings.append)
    for i in range(40):
        store.store(f"k{i}", Generation(text=f"{i}" * 3000, model="m"), "p")
    store.close()
    _damage(path)
    store = open_sqlite(path, warnings.append)
    assert store is not None and len(warnings) == 1 and "moved it to c.sqlite.corrupt-" in warnings[0], warnings
    assert "\n" not in warnings[0]
    store.close()


def test_existing_cache_on_a_read_only_disk_is_read_with_one_warning(shell, sandbox, use_endpoint, monkeypatch,
                                                                    tmp_path, read_only):
    from nb_model import cache
    course = tmp_path / "course"
    course.mkdir()
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("JPY_SESSION_NAME", str(course / "lesson.ipynb"))
    use_endpoint(sandbox)
    cell = "%%generate --max-tokens 12 -o g\nTell me about tides"
    run(shell, cell)
    first = shell.user_ns["g"]
    cache.reset()
    sandbox.reset()
    read_only(course / ".nb_model")
    read_only(course)
    results = [run(shell, cell) for _ in range(2)]
    assert all(res.success for res, _ in results)
    assert shell.user_ns["g"].cached and shell.user_ns["g"].text == first.text  # read from the old file
    assert sandbox.stats()["requests"] == 0
    run(shell, "%%generate --max-tokens 12\nSomething new")
    run(shell, "%%generate --max-tokens 12\nSomething new")
    assert sandbox.stats()["requests"] == 2  # not stored: writes are off
    warned = [w for _, cap in results for w in notices(cap)]
    assert len(warned) == 1 and "cannot be written" in warned[0] and "reading its answers" in warned[0], warned


def test_unknown_cache_mode_is_one_line(sandbox):
    for bad in ("sometimes", True, None):
        with pytest.raises(ConfigError) as info:
            client(sandbox).generate("x", cache=bad)
        assert "'use', 'refresh', 'off'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cache must be one of"):
        nb_model.generate_many(["x"], cache="sometimes", progress=False)
    assert sandbox.stats()["requests"] == 0


def test_malformed_cache_url_is_one_warning(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("NB_MODEL_CACHE_URL", "redis://localhost:notaport/0")
    res, cap = run(shell, "%%generate --max-tokens 5 -o g\nhello")
    assert res.success and shell.user_ns["g"].text and "Traceback" not in text_of(cap)
    assert any("is not valid" in n for n in notices(cap))


def test_sqlite_store_survives_values_it_cannot_hold(tmp_path):
    from nb_model.cache.sqlite_store import open_sqlite
    from nb_model.results import Generation, Usage
    warned = []
    store = open_sqlite(tmp_path / "c.sqlite", warned.append)
    store.record({"time": 1.0, "text": "ok", "completion_tokens": 10 ** 30})
    store.record({"time": 2.0, "text": "lone \ud800"})
    store.store("k", Generation(text="lone \ud800", usage=Usage(1, 10 ** 30)), "head")
    assert len(warned) == 1 and "cache file" in warned[0] and "\n" not in warned[0]
    store.record({"time": 3.0, "text": "fine", "completion_tokens": 3})
    assert [r["text"] for r in store.history()] == ["fine"]
    store.close()


def test_a_cached_answer_in_a_new_kernel_shows_the_same_notice(shell, new_kernel, monkeypatch, tmp_path):
    """nbval re-runs the tutorials on a warm cache: their outputs must not depend on it."""
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    cold = notices(run(shell, "%%generate --max-tokens 3 -o g\nhello")[1])
    assert not shell.user_ns["g"].cached
    new_kernel.pop("sandbox").stop()
    warm = notices(run(shell, "%%generate --max-tokens 3 -o g\nhello")[1])
    assert shell.user_ns["g"].cached and len(cold) == len(warm) == 1


@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_content_filtered_answer_is_not_cached(shell, sandbox, use_endpoint, monkeypatch, protocol):
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox, protocol=protocol)
    cell = "%%generate --max-tokens 40\ntell me about volcanoes"
    sandbox.inject("filter")
    res, cap = run(shell, cell)
    footer = "\n".join(shown(cap))
    assert res.success and "content filter" in footer and "rephrase the prompt" in footer
    res, again = run(shell, cell)  # asks again: now the whole answer, which is cached
    assert requests_seen(sandbox, 2) == 2 and "content filter" not in "\n".join(shown(again))
    run(shell, cell)
    assert "cached" in "\n".join(shown(_last(shell, cell))) and requests_seen(sandbox, 2) == 2


def _last(shell, cell):
    return run(shell, cell)[1]


def _entries() -> int:
    from nb_model.cache.router import local_store
    return local_store().stats()["entries"]


def test_cache_keys_and_storage_never_raise_on_odd_text(tmp_path):
    from nb_model.cache.keys import cache_key
    from nb_model.cache.sqlite_store import open_sqlite
    from nb_model.results import Generation
    assert cache_key({"prompt": "\udce9"}) != cache_key({"prompt": "\ufffd"})
    warnings = []
    store = open_sqlite(tmp_path / "c.sqlite", warnings.append)
    store.store("k", Generation(text="\ud800 text", model="m"), "head \udce9")  # one warning, no traceback
    assert len(warnings) <= 1 and all("\n" not in w for w in warnings)
    store.close()


# -- incomplete answers are never cached ------------------------------------------------------------------
@pytest.fixture
def slow(use_endpoint):
    with SandboxServer(port=0, qps=0, token_rate=30) as server:
        use_endpoint(server)
        yield server


def test_a_stream_closed_early_is_not_cached(slow, cache_on):
    import nb_model
    stream = nb_model.stream("write a long essay about tides", max_tokens=300)
    got = []
    for piece in stream:
        got.append(piece)
        if len(got) == 5:
            stream.close()
    assert stream.generation.finish_reason == "stopped"
    assert _entries() == 0
    again = nb_model.stream("write a long essay about tides", max_tokens=300)
    next(iter(again))
    again.close()
    assert not again.generation.cached and slow.stats()["requests"] == 2


def test_an_interrupted_cell_is_not_cached(shell, slow, cache_on):
    cell = "%%generate --max-tokens 300 -o g\nwrite a long essay about rivers"
    res, cap, _ = run_interrupted(shell, cell, after=0.6)
    assert shell.user_ns["g"].finish_reason == "interrupted" and shell.user_ns["g"].text
    assert _entries() == 0


def test_the_panels_stop_is_not_cached(slow, cache_on):
    from nb_model.panel import Panel
    panel = Panel("write a long essay about gardens", max_tokens=300)
    panel.generate_button.click()
    deadline = time.monotonic() + 10
    while len(panel.text) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    panel.stop_button.click()
    assert panel.wait(2)
    assert panel.history[0].generations[0].finish_reason == "stopped"
    assert _entries() == 0


def test_compare_stop_and_interrupt_are_not_cached(shell, slow, cache_on):
    from nb_model.panel import Panel
    panel = Panel("write a long essay about ships", max_tokens=300, compare="max_tokens=290,300")
    panel.generate_button.click()
    deadline = time.monotonic() + 10
    while not all(panel.text) and time.monotonic() < deadline:
        time.sleep(0.02)
    panel.stop_button.click()
    assert panel.wait(2)
    assert [g.finish_reason for g in panel.history[0].generations] == ["stopped", "stopped"]
    res, cap, _ = run_interrupted(shell, '%%generate --compare "temperature=0.2,0.8" --max-tokens 300 -o g\n'
                                         'write a long essay about harbours', after=0.8)
    assert _entries() == 0
