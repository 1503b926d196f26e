"""Nothing lost when several processes create, use and lose one cache file at once (real SQLite, real processes)."""
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import notices, run

ROOT = Path(__file__).resolve().parents[2]
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


WRITER = """
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
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(who), str(logs[who]), repr(start)],
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


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096:12288] = b"\xde\xad\xbe\xef" * 2048
    path.write_bytes(bytes(data))


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


@pytest.fixture
def immutable(tmp_path):
    """Make a folder unwritable, even for root (the immutable flag where chmod is not enough)."""
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
            from conftest import missing_part
            missing_part("cannot make a folder read-only here (root without chattr support)")
    yield lock
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_existing_cache_on_a_read_only_disk_is_read_with_one_warning(shell, sandbox, use_endpoint, monkeypatch,
                                                                    tmp_path, immutable):
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
    immutable(course / ".nb_model")
    immutable(course)
    results = [run(shell, cell) for _ in range(2)]
    assert all(res.success for res, _ in results)
    assert shell.user_ns["g"].cached and shell.user_ns["g"].text == first.text  # read from the old file
    assert sandbox.stats()["requests"] == 0
    run(shell, "%%generate --max-tokens 12\nSomething new")
    run(shell, "%%generate --max-tokens 12\nSomething new")
    assert sandbox.stats()["requests"] == 2  # not stored: writes are off
    warned = [w for _, cap in results for w in notices(cap)]
    assert len(warned) == 1 and "cannot be written" in warned[0] and "reading its answers" in warned[0], warned
