"""The per-notebook SQLite file: cache entries and the history of generations.

WAL mode, a busy timeout and one connection guarded by a lock make it safe for
several threads and kernels at once; a kernel killed mid-write leaves the last
committed state. A corrupt or foreign file is moved aside (`.corrupt-<time>-<pid>-<id>`)
with one warning; a location that cannot be written means no cache (one warning),
and an existing file there is still read (read-only, one warning).

Several processes may create the same file at once (kernels of one notebook started
together, worker processes): the file's identity is always read inside one
transaction, so a half-made file of another process is never taken for a foreign one,
and a store whose file was moved or replaced under it re-opens the path (one warning)
instead of writing on into the moved file.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ..results import Generation

APP_ID = 0x6E626D31  # "nbm1" in the file header: marks the file as ours
BUSY_TIMEOUT_MS = 30_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT, prompt_head TEXT, generation TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_created ON entries(created);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, session TEXT, profile TEXT, model TEXT,
    params TEXT, system TEXT, prompt TEXT, text TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
    ttft_s REAL, latency_s REAL, cached INTEGER, cost_usd REAL, finish_reason TEXT, error TEXT,
    usage_estimated INTEGER);
"""
# columns added after the first release, with their type: added to older files when opened
ADDED_COLUMNS = {"history": {"usage_estimated": "INTEGER"}}
HISTORY_COLUMNS = ("time", "session", "profile", "model", "params", "system", "prompt", "text", "prompt_tokens",
                   "completion_tokens", "ttft_s", "latency_s", "cached", "cost_usd", "finish_reason", "error",
                   "usage_estimated")

Warn = Callable[[str], None]


class _NotOurs(sqlite3.DatabaseError):
    """A valid SQLite file that belongs to something else, or one that fails its integrity check."""


def _one_line(exc: BaseException) -> str:
    """An error's text on one line (SQLite's integrity reports span several)."""
    return " ".join(str(exc).split())


def _classify(conn: sqlite3.Connection) -> str:
    """'ours', 'empty' or 'foreign' (raises DatabaseError when the file is not SQLite at all).

    Call it inside a transaction: the header and the table list must come from one snapshot."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    if app_id == APP_ID:
        return "ours"
    return "empty" if app_id == 0 and not tables else "foreign"


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL; a fresh file opened by several kernels at once may be briefly locked."""
    for attempt in range(50):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.05)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Bring a file made by an older version up to date (its rows read the new columns as NULL)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN")  # one read snapshot: another process may be setting the file up right now
        try:
            kind = _classify(conn)
        finally:
            conn.execute("COMMIT")
        if kind == "foreign":
            raise _NotOurs("not an nb_model cache file")
        _wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        kind = _classify(conn)  # again, inside the write lock: another kernel may have set it up
        if kind == "foreign":
            raise _NotOurs("not an nb_model cache file")
        if kind == "empty":
            conn.execute(f"PRAGMA application_id={APP_ID}")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        _add_columns(conn)
        conn.execute("COMMIT")
        check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise _NotOurs(f"integrity check failed: {check}")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """The existing file, read only (for a location that cannot be written); raises sqlite3.Error."""
    errors = []
    for flags in ("mode=ro", "immutable=1"):  # a WAL file in a read-only folder needs immutable
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?{flags}", uri=True, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("BEGIN")
                kind = _classify(conn)
                conn.execute("COMMIT")
                if kind != "ours":
                    raise _NotOurs("not an nb_model cache file")
                return conn
            except BaseException:
                conn.close()
                raise
        except _NotOurs:
            raise
        except sqlite3.Error as exc:
            errors.append(exc)
    raise errors[-1]


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _move_aside(path: Path, expected: tuple[int, int] | None = None) -> Path | None:
    """Rename the file (and its WAL) to a unique `<name>.corrupt-<time>-<pid>-<id>`; return the new name,
    None when another process moved it first (or replaced it by a fresh file: that one is put back)."""
    stamp = time.strftime('%Y%m%dT%H%M%S')
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    if expected is not None and _file_id(target) != expected:  # not the file we judged: undo
        if not path.exists():
            os.replace(target, path)
        return None
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{target}{suffix}"))
    return target


def open_sqlite(path: Path, warn: Warn) -> "SQLiteStore | None":
    """Open (or create) the cache file; None, after one warning, when it cannot be written."""
    off = "caching and history on disk are off for this session"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if not path.exists():
            warn(f"nb_model: cannot use the cache folder {path.parent} ({exc.strerror or exc}); {off}")
            return None
    try:
        for attempt in (1, 2, 3):
            seen = _file_id(path)
            try:
                return SQLiteStore(_connect(path), path, warn)
            except sqlite3.OperationalError as exc:
                return _read_only(path, warn, exc, off)
            except sqlite3.DatabaseError as exc:
                if attempt == 3:
                    raise
                if attempt == 1 or _file_id(path) != seen:
                    time.sleep(0.05)  # look once more (or at the file that replaced it) before judging it
                    continue
                target = _move_aside(path, seen)
                if target is not None:
                    warn(f"nb_model: the cache file {path} was unreadable ({_one_line(exc)}); moved it to "
                         f"{target.name} and started a fresh cache")
    except (OSError, sqlite3.Error) as exc:
        warn(f"nb_model: cannot use the cache folder {path.parent} "
             f"({getattr(exc, 'strerror', None) or _one_line(exc)}); {off}")
    return None


def _read_only(path: Path, warn: Warn, exc: BaseException, off: str) -> "SQLiteStore | None":
    """The file cannot be written: read it (one warning) if it is ours, else no cache (one warning)."""
    if path.exists():
        try:
            store = SQLiteStore(_connect_read_only(path), path, warn, read_only=True)
        except sqlite3.Error:
            pass
        else:
            warn(f"nb_model: the cache file {path} cannot be written ({_one_line(exc)}); reading its answers, "
                 f"new ones are not stored this session")
            return store
    warn(f"nb_model: cannot write the cache file {path} ({_one_line(exc)}); {off}")
    return None


class SQLiteStore:
    """Entries (key → Generation JSON) and history rows in one SQLite file."""

    kind = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path, warn: Warn, read_only: bool = False) -> None:
        self.conn, self.path, self._warn = conn, path, warn
        self.read_only = read_only
        self._lock = threading.Lock()
        self._failed = False
        self._file = _file_id(path)

    def _follow(self) -> None:
        """If the file at `path` is no longer the one we opened (moved aside or replaced by another
        process), re-open the path, so nothing more is written into a file nobody will read."""
        now = _file_id(self.path)
        if now == self._file or self.read_only:
            return
        self.conn.close()
        self.conn = _connect(self.path)
        self._file = _file_id(self.path)
        self._warn(f"nb_model: the cache file {self.path} was moved or replaced by another process; "
                   f"re-opened it (answers stored before that are in the moved file)")

    def describe(self) -> str:
        return str(self.path)

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], Any], default: Any = None) -> Any:
        """Run one statement group under the lock; a failure (also a value SQLite cannot hold: a huge
        integer, text that is not valid Unicode) is one warning, never a traceback."""
        if self.read_only and what != "read":
            return default  # said once, when the file was opened
        try:
            with self._lock:
                self._follow()
                return fn(self.conn)
        except (sqlite3.Error, OverflowError, UnicodeError, ValueError, TypeError) as exc:
            if not self._failed:
                self._failed = True
                self._warn(f"nb_model: the cache file {self.path} failed to {what} ({_one_line(exc)}); "
                           f"continuing without it")
            return default

    # -- entries --------------------------------------------------------------
    def lookup(self, key: str) -> Generation | None:
        row = self._run("read", lambda c: c.execute(
            "SELECT generation FROM entries WHERE key=?", (key,)).fetchone())
        if not row:
            return None
        try:
            return Generation.from_dict(json.loads(row[0]))
        except (ValueError, TypeError):
            return None  # a damaged entry is a miss; the next store replaces it

    def store(self, key: str, gen: Generation, head: str) -> None:
        def insert(c: sqlite3.Connection):
            data = json.dumps({**gen.to_dict(), "cached": False}, ensure_ascii=False)
            return c.execute("INSERT OR REPLACE INTO entries(key, created, model, prompt_head, generation) "
                             "VALUES (?,?,?,?,?)", (key, time.time(), gen.model, head, data))
        self._run("write", insert)

    def entries(self, n: int | None = None) -> list[dict]:
        """Newest first: created, model, prompt_head."""
        rows = self._run("read", lambda c: c.execute(
            "SELECT created, model, prompt_head FROM entries ORDER BY created DESC LIMIT ?",
            (-1 if n is None else n,)).fetchall(), [])
        return [{"created": r[0], "model": r[1], "prompt_head": r[2]} for r in rows]

    def stats(self) -> dict:
        row = self._run("read", lambda c: c.execute(
            "SELECT count(*), min(created), max(created) FROM entries").fetchone(), (0, None, None))
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.exists(p))
        return {"entries": row[0], "bytes": size, "oldest": row[1], "newest": row[2]}

    def clear(self, older_than_s: float | None = None) -> int:
        if older_than_s is None:
            cur = self._run("clear", lambda c: c.execute("DELETE FROM entries"))
        else:
            cur = self._run("clear", lambda c: c.execute(
                "DELETE FROM entries WHERE created < ?", (time.time() - older_than_s,)))
        return cur.rowcount if cur is not None else 0

    # -- history --------------------------------------------------------------
    def record(self, row: dict) -> None:
        def insert(c: sqlite3.Connection):
            values = {**row, "params": json.dumps(row.get("params") or {}, sort_keys=True)}
            return c.execute(f"INSERT INTO history({','.join(HISTORY_COLUMNS)}) "
                             f"VALUES ({','.join('?' * len(HISTORY_COLUMNS))})",
                             tuple(values.get(c) for c in HISTORY_COLUMNS))
        self._run("write", insert)

    def history(self, n: int | None = None) -> list[dict]:
        """The last n rows (all when None), oldest first."""
        rows = self._run("read", lambda c: c.execute(
            f"SELECT {','.join(HISTORY_COLUMNS)} FROM history ORDER BY id DESC LIMIT ?",
            (-1 if n is None else n,)).fetchall(), [])
        out = [dict(zip(HISTORY_COLUMNS, r)) for r in reversed(rows)]
        for row in out:
            row["params"] = json.loads(row["params"] or "{}")
        return out

    def usage_rows(self) -> list[dict]:
        """Only the columns usage totals need, for every row."""
        cols = ("cached", "prompt_tokens", "completion_tokens", "cost_usd", "usage_estimated")
        rows = self._run("read", lambda c: c.execute(f"SELECT {','.join(cols)} FROM history").fetchall(), [])
        return [dict(zip(cols, r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self.conn.close()
