"""The relay's per-user counters on real SQLite files and a real redis-server (no server needed)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from nb_model.server.quotas import Quotas, QuotaExceeded, RedisCounters, SQLiteCounters, seconds_to_midnight

NOON = datetime(2030, 5, 17, 12, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def open_store(request, tmp_path):
    """open_store() -> a counter store; each call opens the same data again (like a restart)."""
    opened = []

    def open_():
        if request.param == "sqlite":
            store = SQLiteCounters(str(tmp_path / "quotas.sqlite"))
        else:
            store = RedisCounters(request.getfixturevalue("redis_server"))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def user():
    return "user-" + uuid.uuid4().hex[:8]  # the Redis server is shared by the session


def test_rate_allows_a_burst_then_says_how_long_to_wait(open_store, user):
    quotas = Quotas(open_store(), qps=2, tokens_per_day=0)
    quotas.admit(user, now=NOON)
    quotas.admit(user, now=NOON)  # burst of 2
    with pytest.raises(QuotaExceeded) as info:
        quotas.admit(user, now=NOON)
    assert info.value.retry_after == pytest.approx(0.5)
    assert "2 requests per second" in str(info.value)
    quotas.admit(user, now=NOON + 0.5)  # one slot freed at the steady rate
    with pytest.raises(QuotaExceeded):
        quotas.admit(user, now=NOON + 0.6)


def test_rate_is_per_user_and_survives_reopening(open_store, user):
    Quotas(open_store(), qps=1, tokens_per_day=0).admit(user, now=NOON)
    reopened = Quotas(open_store(), qps=1, tokens_per_day=0)
    with pytest.raises(QuotaExceeded):
        reopened.admit(user, now=NOON + 0.2)
    reopened.admit(user + "-other", now=NOON + 0.2)


def test_daily_tokens_persist_and_reset_at_utc_midnight(open_store, user):
    quotas = Quotas(open_store(), qps=0, tokens_per_day=100)
    quotas.admit(user, now=NOON)
    quotas.record(user, 70, now=NOON)
    quotas.admit(user, now=NOON + 1)  # 70 < 100: still allowed (the limit stops the next request)
    quotas.record(user, 40, now=NOON + 1)
    reopened = Quotas(open_store(), qps=0, tokens_per_day=100)
    assert reopened.used_today(user, now=NOON + 2) == 110
    with pytest.raises(QuotaExceeded) as info:
        reopened.admit(user, now=NOON + 2)
    assert info.value.retry_after == pytest.approx(12 * 3600 - 2)
    assert "used 110 of 100 tokens" in str(info.value)
    reopened.admit(user + "-other", now=NOON + 2)
    reopened.admit(user, now=NOON + 12 * 3600)  # the next UTC day


def test_reservations_keep_concurrent_requests_under_the_daily_limit(open_store, user):
    quotas = Quotas(open_store(), qps=0, tokens_per_day=100)
    first = quotas.admit(user, now=NOON, reserve=60)
    assert quotas.used_today(user, now=NOON) == 60  # counted before any reply
    with pytest.raises(QuotaExceeded) as info:
        quotas.admit(user, now=NOON, reserve=50)  # 60 + 50 > 100, although 60 < 100
    assert "used 60 of 100 tokens today (UTC) and this request may take 50 more" in str(info.value)
    assert "lower max_tokens" in str(info.value) and info.value.retry_after == pytest.approx(12 * 3600)
    second = quotas.admit(user, now=NOON, reserve=40)
    quotas.settle(first, 25)  # the real usage replaces the reservation
    quotas.settle(second, 0)  # nothing came back: released
    reopened = Quotas(open_store(), qps=0, tokens_per_day=100)
    assert reopened.used_today(user, now=NOON) == 25
    with pytest.raises(QuotaExceeded, match="may take 101 more"):
        reopened.admit(user + "-big", now=NOON, reserve=101)  # never fits: refused outright


def test_a_request_refused_by_the_rate_holds_no_tokens(open_store, user):
    quotas = Quotas(open_store(), qps=1, tokens_per_day=100)
    quotas.admit(user, now=NOON, reserve=30)
    with pytest.raises(QuotaExceeded, match="requests per second"):
        quotas.admit(user, now=NOON, reserve=30)
    assert quotas.used_today(user, now=NOON) == 30


def test_seconds_to_midnight():
    assert seconds_to_midnight(NOON) == 12 * 3600
    assert seconds_to_midnight(NOON + 12 * 3600 - 1) == 1
