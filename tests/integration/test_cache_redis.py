"""The shared cache on a real redis-server (started by the `redis_server` fixture on a loopback port)."""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import _free_port, notices, requests_seen, run

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]
CELL = "%%generate --max-tokens 12 -o g\nName three {thing}"


@pytest.fixture
def db(redis_server):
    import redis
    conn = redis.Redis.from_url(redis_server)
    yield conn
    conn.close()


@pytest.fixture
def shared(shell, sandbox, use_endpoint, redis_server, monkeypatch):
    """The magic with NB_MODEL_CACHE_URL set; each test gets its own namespace."""
    use_endpoint(sandbox)
    monkeypatch.setenv("NB_MODEL_CACHE_URL", redis_server)
    namespace = "t" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("NB_MODEL_CACHE_NAMESPACE", namespace)
    shell.user_ns["thing"] = "rivers"
    return shell, namespace


def keys(db, namespace: str) -> list[bytes]:
    return sorted(db.scan_iter(match=f"nb_model:{namespace}:*"))


CHILD = """
import nb_model
g = nb_model.generate("Name three rivers", max_tokens=12)
print(g.cached, g.text, sep="\\n")
"""


def test_one_cache_shared_by_two_kernels(shared, sandbox, db, tmp_path, monkeypatch):
    shell, namespace = shared
    monkeypatch.delenv("NB_MODEL_CACHE")
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "alice.ipynb"))
    res, _ = run(shell, CELL)
    first = shell.user_ns["g"]
    assert res.success and not first.cached and requests_seen(sandbox, 1) == 1
    [key] = keys(db, namespace)
    assert len(key.decode().rsplit(":", 1)[1]) == 64
    # another kernel (another process, another notebook) with the same URL: served from Redis
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JPY_SESSION_NAME": str(tmp_path / "bob.ipynb")}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["True", first.text] and requests_seen(sandbox, 1) == 1
    # history stays per notebook, on disk; the entries are in Redis only
    import sqlite3
    with sqlite3.connect(tmp_path / ".nb_model" / "bob.sqlite") as conn:
        assert conn.execute("SELECT cached FROM history").fetchall() == [(1,)]
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    _, cap = run(shell, "%generate cache path")
    assert f"namespace '{namespace}'" in cap.stdout and "alice.sqlite" in cap.stdout


def test_namespaces_separate_entries(shared, sandbox, db, redis_server, monkeypatch):
    shell, namespace = shared
    run(shell, CELL)
    monkeypatch.setenv("NB_MODEL_CACHE_NAMESPACE", namespace + "b")
    run(shell, CELL)
    assert not shell.user_ns["g"].cached and requests_seen(sandbox, 2) == 2
    monkeypatch.delenv("NB_MODEL_CACHE_NAMESPACE")
    monkeypatch.setenv("NB_MODEL_CACHE_URL", f"{redis_server}?namespace={namespace}")  # the URL can say it
    run(shell, CELL)
    assert shell.user_ns["g"].cached and requests_seen(sandbox, 2) == 2
    assert len(keys(db, namespace)) == len(keys(db, namespace + "b")) == 1


def test_ttl_expires_entries(shared, sandbox, db, monkeypatch):
    shell, namespace = shared
    monkeypatch.setenv("NB_MODEL_CACHE_TTL", "1")
    run(shell, CELL)
    [key] = keys(db, namespace)
    assert 0 < db.pttl(key) <= 1000
    run(shell, CELL)
    assert shell.user_ns["g"].cached and requests_seen(sandbox, 1) == 1
    time.sleep(1.1)
    run(shell, CELL)
    assert not shell.user_ns["g"].cached and requests_seen(sandbox, 2) == 2
    monkeypatch.setenv("NB_MODEL_CACHE_TTL", "soon")
    shell.user_ns["thing"] = "lakes"
    res, cap = run(shell, CELL)
    assert res.success and any("TTL must be a whole number" in n for n in notices(cap))
    assert sorted(db.pttl(k) for k in keys(db, namespace))[0] == -1  # stored without expiry


def test_clear_touches_only_its_own_namespace(shared, sandbox, db, monkeypatch):
    shell, namespace = shared
    for thing in ("rivers", "mountains"):
        shell.user_ns["thing"] = thing
        run(shell, CELL)
    monkeypatch.setenv("NB_MODEL_CACHE_NAMESPACE", namespace + "x")  # a namespace sharing the prefix
    run(shell, CELL)
    db.set("someone:else", "keep me")
    monkeypatch.setenv("NB_MODEL_CACHE_NAMESPACE", namespace)
    _, cap = run(shell, "%generate cache list")
    assert "Name three rivers" in cap.stdout and "Name three mountains" in cap.stdout
    _, cap = run(shell, "%generate cache stats")
    assert "entries          2" in cap.stdout and "redis://127.0.0.1" in cap.stdout
    _, cap = run(shell, "%generate cache clear --older-than 1")
    assert "removed 0" in cap.stdout and len(keys(db, namespace)) == 2
    _, cap = run(shell, "%generate cache clear")
    assert "removed 2 cache entries" in cap.stdout and keys(db, namespace) == []
    assert len(keys(db, namespace + "x")) == 1 and db.get("someone:else") == b"keep me"


def test_unreachable_redis_warns_once_and_generation_goes_on(shell, sandbox, use_endpoint, monkeypatch):
    use_endpoint(sandbox)
    port = _free_port()
    monkeypatch.setenv("NB_MODEL_CACHE_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    shell.user_ns["thing"] = "rivers"
    results = [run(shell, CELL) for _ in range(2)]
    assert all(res.success and "[sandbox]" in cap.stdout for res, cap in results)
    assert requests_seen(sandbox, 2) == 2
    said = [n for _, cap in results for n in notices(cap)]
    about_cache = [n for n in said if "Redis cache" in n]
    assert len(about_cache) == 1 and "unreachable" in about_cache[0] and "generating without the cache" in about_cache[0]
    assert not any("hunter2" in n for n in said) and "***@127.0.0.1" in about_cache[0]
    down = f"the Redis cache at redis://***@127.0.0.1:{port}/0 is unreachable: generation continues uncached"
    for sub in ("stats", "list", "clear", "clear --older-than 2"):  # not "entries 0", "empty" nor "removed 0"
        res, cap = run(shell, f"%generate cache {sub}")
        assert res.success and cap.stdout.strip() == down and notices(cap) == [] and not cap.stderr, sub
    _, cap = run(shell, "%generate cache path")
    assert "unreachable" in cap.stdout and "hunter2" not in cap.stdout


def test_profile_cache_url_selects_redis(shell, sandbox, db, redis_server, tmp_path, monkeypatch):
    namespace = "p" + uuid.uuid4().hex[:10]
    config = tmp_path / "nb_model.toml"
    config.write_text(f'default = "team"\n[profiles.team]\nendpoint = "{sandbox.url}"\n'
                      f'cache_url = "{redis_server}?namespace={namespace}"\n')
    monkeypatch.setenv("NB_MODEL_CONFIG", str(config))
    shell.user_ns["thing"] = "birds"
    run(shell, CELL)
    run(shell, CELL)
    assert shell.user_ns["g"].cached and requests_seen(sandbox, 1) == 1 and len(keys(db, namespace)) == 1
    _, cap = run(shell, "%generate config")
    assert f"namespace={namespace}" in cap.stdout
