"""Keep secrets out of log lines: Authorization values, Bearer tokens and known key strings."""
from __future__ import annotations

import logging
import re
from typing import Callable, Iterable

MASK = "***"
_AUTH = re.compile(r"""(?ix)
    (authorization["']?\s*[:=]\s*["']?)        # Authorization: / "authorization": / authorization=
    (?!(?:(?:bearer|token|basic)\s+)?(?-i:\$[A-Z_][A-Z0-9_]*)(?![^\s"',;}]))  # not a hint naming $A_VARIABLE
    (?:(?:bearer|token|basic)\s+)?[^\s"',;}]+
  | \b(bearer|token)(\s+)[A-Za-z0-9._~+/=-]{8,}  # a bare 'Bearer <token>'
""")
# loggers whose records can carry request details; tornado's log through the server's handlers
LOGGERS = ("tornado.access", "tornado.application", "tornado.general")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with Authorization values, Bearer tokens and every secret replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return _AUTH.sub(_mask, text)


def _mask(match: re.Match) -> str:
    if match.group(1):
        return match.group(1) + MASK
    return match.group(2) + match.group(3) + MASK


_providers: list[Callable[[], Iterable[str]]] = []


def _secrets() -> list[str]:
    return [secret for provider in _providers for secret in provider()]


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through `redact` with every registered secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        clean = redact(message, _secrets())
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), _secrets())
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, _secrets())
        return True


def install(log: logging.Logger, secrets: Callable[[], Iterable[str]]) -> RedactingFilter:
    """Register `secrets` (a function listing them); redact the server's log, tornado's, root's.

    Logger filters catch records where they are made; handler filters catch
    whatever else reaches the server's output.
    """
    if secrets not in _providers:
        _providers.append(secrets)
    filt = _FILTER
    loggers = [log, *(logging.getLogger(name) for name in LOGGERS)]
    handlers = [*log.handlers, *logging.getLogger().handlers]
    for target in (*loggers, *handlers):
        if filt not in target.filters:
            target.addFilter(filt)
    return filt


_FILTER = RedactingFilter("nb_model.redact")
