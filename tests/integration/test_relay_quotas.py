"""Relay quotas: request rate and daily token budgets, their stores (SQLite, Redis), usage settling."""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from helpers.loopback import Loopback
from helpers.relay import serve, upstream, use_relay  # noqa: F401 (fixtures)

from nb_model.client import Client
from nb_model.config import resolve_profile
from nb_model.errors import APIError
from nb_model.server.quotas import (
    QuotaExceeded,
    Quotas,
    RedisCounters,
    SQLiteCounters,
    seconds_to_midnight,
)
from nb_model.tokens import estimate_tokens

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


# -- quotas ---------------------------------------------------------------------------------------------
PROMPTS = {
    "digits": "1,2,3,4,5,6,7,8,9," * 150,
    "punctuation": "!?.;:-()[]{}<>/\\|@#$%^&*+=~`'\"" * 40,
    "chinese": "长江是亚洲最长的河流，流经中国多个省份。" * 60,
    "code": "def f(x):\n    return [i ** 2 for i in range(x) if i % 3 == 0]\n" * 30,
}


def _tokenizer_count(text: str) -> int:
    """What a real tokenizer reports, roughly: digits, punctuation and CJK one token each, words in pieces."""
    return len(re.findall(r"[\u4e00-\u9fff]|\d|[^\w\s]|[A-Za-z]{1,4}", text))


class UsageUpstream(Loopback):
    """An upstream of either protocol, from the documented examples: OpenAI chat replies with `usage`
    (counted as a tokenizer would), seed streams JSON lines `{"text": ...}` and nothing else."""

    def __init__(self, words: int = 12):
        self.requests = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.requests += 1
                n = min(words, body.get("max_tokens") or words)
                if self.path.endswith("/generate"):
                    out = b"".join(json.dumps({"text": "flow "}).encode() + b"\n" for _ in range(n))
                    ctype = "application/x-ndjson"
                else:
                    prompt = body["messages"][-1]["content"]
                    out = json.dumps({"id": "c1", "object": "chat.completion", "choices": [{
                        "index": 0, "message": {"role": "assistant", "content": "flow " * n},
                        "finish_reason": "length"}], "usage": {
                        "prompt_tokens": _tokenizer_count(prompt), "completion_tokens": n,
                        "total_tokens": _tokenizer_count(prompt) + n}}).encode()
                    ctype = "application/json"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.serve(Handler)



@pytest.fixture
def usage_upstream():
    server = UsageUpstream()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_settings(request):
    if request.param == "sqlite":
        return {}
    return {"redis_url": request.getfixturevalue("redis_server")}


@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_prompts_of_every_kind_never_take_the_day_past_its_limit(serve, usage_upstream, store_settings, kind):
    limit, user = 1000, "q-" + uuid.uuid4().hex[:8]
    server = serve(tokens_per_day=limit, token_user=user, **store_settings, profiles={
        "chat": {"endpoint": usage_upstream.url + "/v1", "protocol": "openai", "key_env": KEY_ENV},
        "seed": {"endpoint": usage_upstream.url, "protocol": "seed", "key_env": KEY_ENV}})
    prompt = PROMPTS[kind]
    assert estimate_tokens(prompt, bound=True) >= _tokenizer_count(prompt)  # the reservation is on the safe side
    bodies = [("chat/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}], "max_tokens": 12}),
              ("seed/v1/generate", {"prompt": prompt, "max_tokens": 12})]
    codes = []
    for i in range(12):
        path, body = bodies[i % 2]
        headers = {**server.relay_auth, **({"X-Stream": "true"} if path.startswith("seed") else {})}
        codes.append(server.post("relay/" + path, body, headers).status_code)
    used = requests.get(server.url + "nb-model/status", headers=server.relay_auth, timeout=10).json()
    assert 429 in codes and used["tokens_used_today"] <= limit, (codes, used)
    assert usage_upstream.requests == codes.count(200)


def test_usage_settles_to_what_the_upstream_reported_or_the_streamed_text(serve, usage_upstream, store_settings):
    user = "s-" + uuid.uuid4().hex[:8]
    server = serve(tokens_per_day=100_000, token_user=user, **store_settings, profiles={
        "chat": {"endpoint": usage_upstream.url + "/v1", "protocol": "openai", "key_env": KEY_ENV},
        "seed": {"endpoint": usage_upstream.url, "protocol": "seed", "key_env": KEY_ENV}})
    prompt = PROMPTS["digits"]

    def used(expected: int) -> int:
        """The day's count once settled (the reply reaches the caller just before the relay settles it)."""
        deadline = time.monotonic() + 5
        while True:
            value = requests.get(server.url + "nb-model/status", headers=server.relay_auth, timeout=10).json()[
                "tokens_used_today"]
            if value == expected or time.monotonic() > deadline:
                return value
            time.sleep(0.02)

    assert server.post("relay/chat/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}],
                                                           "max_tokens": 500}, server.relay_auth).ok
    first = _tokenizer_count(prompt) + 12
    assert used(first) == first  # the reported usage, not the 500 reserved
    r = server.post("relay/seed/v1/generate", {"prompt": prompt, "max_tokens": 500},
                    {**server.relay_auth, "X-Stream": "true"})
    assert r.ok and r.text.count('"text"') == 12
    both = first + estimate_tokens(prompt) + estimate_tokens("flow " * 12)
    assert used(both) == both  # no usage from a seed stream: the estimate of the prompt and what was streamed


KEY_ENV = "NBM_TEST_UPSTREAM_KEY"


CHAT = {"messages": [{"role": "user", "content": "Tell me about rivers"}], "max_tokens": 20}


# -- per-user limits ------------------------------------------------------------
def test_qps_limit_gives_429_with_retry_after(serve, monkeypatch):
    server = serve(qps=2)
    replies = [server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth) for _ in range(6)]
    limited = [r for r in replies if r.status_code == 429]
    assert [r.status_code for r in replies][:2] == [200, 200] and len(limited) >= 3
    assert int(limited[0].headers["Retry-After"]) >= 1 and 0 < int(limited[0].headers["retry-after-ms"]) <= 1000
    assert "2 requests per second" in limited[0].json()["error"]["message"]
    time.sleep(int(limited[-1].headers["retry-after-ms"]) / 1000 + 0.05)
    assert server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth).status_code == 200
    use_relay(monkeypatch, server)
    assert resolve_profile("relay:chat").qps == 2  # the client core paces itself to the relay's limit
    gens = [Client(resolve_profile("relay:chat")).generate("hi", max_tokens=3) for _ in range(4)]
    assert all(g.text for g in gens)


def test_daily_token_limit_survives_restart_and_is_per_user(serve, monkeypatch, tmp_path):
    db = str(tmp_path / "shared-quotas.sqlite")
    server = serve(tokens_per_day=70, quota_db=db, token_user="ada")
    use_relay(monkeypatch, server)
    client = Client(resolve_profile("relay:chat"))
    used, refused = 0, None
    while refused is None:
        try:
            used += client.generate("Tell me about rivers", max_tokens=20, stream=True).usage.total_tokens
        except APIError as exc:
            refused = exc
    reserve = 20 + estimate_tokens("Tell me about rivers") + 4 + 3  # max_tokens, prompt, message framing
    assert used <= 70 < used + reserve  # refused while a whole answer could still pass the limit
    assert refused.status == 429 and "daily token limit" in str(refused) and "lower max_tokens" in str(refused)
    r = server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 86400
    status = requests.get(server.url + "nb-model/status", headers=server.relay_auth, timeout=10).json()
    assert status["user"] == "ada" and status["tokens_used_today"] == used
    server.stop()

    again = serve(tokens_per_day=70, quota_db=db, token_user="ada")
    r = again.post("relay/chat/v1/chat/completions", CHAT, again.relay_auth)
    assert r.status_code == 429 and f"used {used} of 70" in r.json()["error"]["message"]
    other = serve(tokens_per_day=70, quota_db=db, token_user="grace")
    assert other.post("relay/chat/v1/chat/completions", CHAT, other.relay_auth).status_code == 200


def test_daily_limit_reserves_max_tokens_up_front(serve, upstream):
    server = serve(tokens_per_day=100, token_user="bea")
    big = server.post("relay/chat/v1/chat/completions", {**CHAT, "max_tokens": 200}, server.relay_auth)
    message = big.json()["error"]["message"]
    assert big.status_code == 429 and "may take" in message and "lower max_tokens" in message
    assert upstream.stats()["requests"] == 0  # refused before anything was sent
    upstream.token_rate = 20.0  # 30 tokens take 1.5 s: the four requests overlap
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: server.post("relay/chat/v1/chat/completions", {**CHAT, "max_tokens": 30},
                                                      server.relay_auth).status_code, range(4)))
    assert codes == [200, 200, 429, 429]  # each reserved 30 + its prompt: two fit in 100
    status = requests.get(server.url + "nb-model/status", headers=server.relay_auth, timeout=10).json()
    assert 60 < status["tokens_used_today"] <= 100  # the real usage replaced the reservations


@pytest.mark.redis
def test_limits_kept_in_redis_when_configured(serve, redis_server, tmp_path):
    import redis
    user = "redis-user-" + uuid.uuid4().hex[:6]
    server = serve(qps=1, tokens_per_day=10_000, redis_url=redis_server, token_user=user)
    codes = [server.post("relay/chat/v1/chat/completions", CHAT, server.relay_auth).status_code for _ in range(2)]
    assert codes == [200, 429]
    conn = redis.Redis.from_url(redis_server)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert int(conn.get(f"nb_model:relay:tokens:{user}:{day}")) > 0
    assert conn.exists(f"nb_model:relay:rate:{user}")
    assert not (tmp_path / "quotas.sqlite").exists()  # Redis instead of the SQLite file
