"""Remove API keys, secrets, signatures and passwords from text before it is logged or stored."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

_KEY_NAMES = (
    r"api[_-]?key|apikey|api[_-]?secret|secret[_-]?key|secret|passphrase|password|passwd|pwd"
    r"|signature|sig|token|access[_-]?token|refresh[_-]?token|private[_-]?key|auth"
)
# key=value, key: value, "key": "value", key='value' (query strings, dict reprs, JSON, headers)
_PAIR = re.compile(
    rf"""(?ix)
    (?P<key>["']?\b(?:{_KEY_NAMES})["']?\s*[=:]\s*)
    (?P<quote>["']?)
    (?P<value>[^\s"'&,;}}\])]+)
    """
)
# redis://user:password@host
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_HEADER = re.compile(
    r"(?i)\b(x-[a-z-]*(?:key|sign|signature|passphrase|token)[a-z-]*)\s*[:=]\s*\S+"
)
MASK = "***"
# shorter values are not masked by value: masking "test" everywhere would rewrite symbols and state
MIN_SECRET_CHARS = 8


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """Return ``str(text)`` with secret-looking values and every known secret masked.

    ``secrets`` are exact values known to be secret (a broker's API key), masked
    wherever they appear, even without a telling key name around them.
    """
    out = str(text)
    # and every credential a guard in this process was built with
    for secret in (*secrets, *_known):
        if secret and len(secret) >= MIN_SECRET_CHARS:
            out = out.replace(secret, MASK)
    out = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", out)
    out = _HEADER.sub(lambda m: f"{m.group(1)}: {MASK}", out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", out)
    return _PAIR.sub(lambda m: f"{m.group('key')}{m.group('quote')}{MASK}", out)


_SECRET_ATTRS = (
    "apiKey",
    "api_key",
    "secret",
    "api_secret",
    "password",
    "passphrase",
    "token",
    "uid",
    "privateKey",
)


def secrets_of(obj: object) -> tuple[str, ...]:
    """Credential values held by a broker object (ccxt's ``apiKey``/``secret``/``password``,
    ...)."""
    found = []
    for name in _SECRET_ATTRS:
        try:
            value = getattr(obj, name, None)
        except Exception:  # a property that fails must not stop redaction
            continue
        if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS:
            found.append(value)
    return tuple(found)


_known: set[str] = set()  # every credential a guard in this process was built with
_known_lock = threading.Lock()


def register_secrets(secrets: Iterable[str]) -> None:
    """Remember credentials so that every broker_guard log line masks them, tracebacks included."""
    with _known_lock:
        _known.update(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and its traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


def logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter: how every module of the package gets
    its logger."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
