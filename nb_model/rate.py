"""The one rate algorithm: GCRA (generic cell rate algorithm), in Python and as a Redis Lua function.

A schedule is one number, the theoretical arrival time (TAT) of the next request. A request books the
slot `interval` after max(TAT, now); it may go when that slot is at most `burst` intervals ahead of now,
else it waits (or is refused) for the difference. This is a token bucket of `burst` tokens refilled at
1/`interval` per second, kept in one number so it can live in a lock, a SQLite row or a Redis key.

It runs in two modes, the only difference between its users:

* **book and wait** — a client limiting itself (`nb_model.limits`, in process or in Redis): the slot is
  always booked and the caller sleeps until it comes, so every caller gets its turn in order;
* **admit or refuse** — a server limiting others (the relay's counters in `nb_model.server.quotas`,
  SQLite or Redis; the sandbox's 429): a request that would wait is refused with the wait as its
  Retry-After, and books nothing, so refused retries do not push the schedule further out.
"""
from __future__ import annotations


def gcra(tat: float | None, now: float, interval: float, burst: float) -> tuple[float, float]:
    """(the schedule's TAT once this request is booked, seconds until it may go: 0 for now)."""
    booked = max(now if tat is None else tat, now) + interval
    return booked, max(0.0, booked - burst * interval - now)


# The same step in Lua for Redis (atomic inside one script): `gcra(key, now, interval, burst)` returns the
# booked TAT and the wait; `book(key, tat, now)` stores the TAT (expiring once the schedule is idle).
GCRA_LUA = """
local function gcra(key, now, interval, burst)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tat = tat + interval
  local wait = tat - burst * interval - now
  if wait < 0 then wait = 0 end
  return tat, wait
end
local function book(key, tat, now)
  redis.call('SET', key, string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
"""
