"""Retries: which statuses are worth another attempt, and how long to wait before it."""
from __future__ import annotations

import email.utils
import random
import time

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_HINT_S = 120.0  # a server asking for a longer wait gets an error line instead ("try later")


def backoff_delay(attempt: int, headers: dict | None = None) -> float:
    """Server hint first (retry-after-ms, Retry-After seconds or HTTP date), else exponential with jitter."""
    hint = server_hint(headers)
    if hint is not None:
        return hint
    return min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())


def server_hint(headers: dict | None) -> float | None:
    """The seconds a reply's retry-after-ms or Retry-After (seconds or HTTP date) asks for, else None."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    hint = None
    if "retry-after-ms" in headers:
        try:
            hint = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    if hint is None and "retry-after" in headers:
        value = headers["retry-after"]
        try:
            hint = float(value)
        except ValueError:
            try:  # an HTTP date; anything unreadable ("soon") means the default backoff
                parsed = email.utils.parsedate_to_datetime(value) if value else None
                if parsed is not None:
                    hint = max(0.0, parsed.timestamp() - time.time())
            except (ValueError, TypeError, OverflowError):
                hint = None
    return hint if hint is not None and hint >= 0 else None
