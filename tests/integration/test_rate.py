"""One rate algorithm (GCRA, `nb_model.rate`): the Python step and the Lua step on a real Redis give the
same schedule, and the relay's SQLite and Redis counters, the client's bucket and the sandbox all follow it."""
import uuid

import pytest

from nb_model.rate import GCRA_LUA, gcra

# (now, interval, burst) arrivals: a burst, a pause, a faster stream
ARRIVALS = [(100.0, 0.5, 2), (100.0, 0.5, 2), (100.1, 0.5, 2), (100.2, 0.5, 2), (103.0, 0.5, 2), (103.0, 0.25, 3),
            (103.01, 0.25, 3), (103.02, 0.25, 3), (103.03, 0.25, 3), (110.0, 1.0, 1), (110.5, 1.0, 1)]


def python_schedule(refuse: bool) -> list[float]:
    tat, waits = None, []
    for now, interval, burst in ARRIVALS:
        booked, wait = gcra(tat, now, interval, burst)
        if not (refuse and wait):
            tat = booked
        waits.append(round(wait, 6))
    return waits


def test_the_python_step():
    assert python_schedule(refuse=False) == [0, 0, 0.4, 0.8, 0, 0, 0.24, 0.48, 0.72, 0, 0.5]  # every call books
    assert python_schedule(refuse=True) == [0, 0, 0.4, 0.3, 0, 0, 0.24, 0.23, 0.22, 0, 0.5]  # a refusal books nothing


@pytest.mark.redis
@pytest.mark.parametrize("refuse", [False, True])
def test_the_lua_step_on_redis_is_the_same_schedule(redis_server, refuse):
    import redis
    client = redis.Redis.from_url(redis_server)
    step = client.register_script(GCRA_LUA + """
local now = tonumber(ARGV[1])
local tat, wait = gcra(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if not (ARGV[4] == '1' and wait > 0) then book(KEYS[1], tat, now) end
return string.format('%.6f', wait)
""")
    key = "nb_model.test.rate:" + uuid.uuid4().hex
    waits = [round(float(step(keys=[key], args=[repr(now), repr(interval), repr(burst), int(refuse)])), 6)
             for now, interval, burst in ARRIVALS]
    assert waits == python_schedule(refuse)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_relay_counters_refuse_on_the_same_schedule(store, request, tmp_path):
    from nb_model.server.quotas import open_store
    counters = open_store(str(tmp_path / "q.sqlite"), request.getfixturevalue("redis_server") if store == "redis"
                          else "")
    user = "u-" + uuid.uuid4().hex[:8]
    try:
        waits = [round(counters.take(user, interval, burst, now), 6) for now, interval, burst in ARRIVALS]
    finally:
        counters.close()
    assert waits == python_schedule(refuse=True)


def test_the_client_bucket_books_and_waits(monkeypatch):
    from nb_model import limits
    clock = iter([now for now, _, _ in ARRIVALS[:4]])
    monkeypatch.setattr(limits.time, "monotonic", lambda: next(clock))
    bucket = limits.TokenBucket(rate=2.0, burst=2)
    assert [round(bucket._reserve(), 6) for _ in range(4)] == python_schedule(refuse=False)[:4]
