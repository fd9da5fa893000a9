"""Remove API keys, secrets, signatures and passwords from text before it is logged or stored.

Masking happens where text enters (an error message, a reason, a URL, a log
line), field by field: never over a serialized document, where a key pattern
would rewrite a symbol or currency named SIG, TOKEN or AUTH.
"""

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


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """Return ``str(text)`` with secret-looking values and every known secret masked.

    ``secrets`` are exact values known to be secret (a broker's API key), masked
    wherever they appear, even without a telling key name around them.
    """
    out = str(text)
    # and every credential a guard in this process was built with, longest first (a secret that
    # contains a shorter one is masked whole), at any length: a 7-character passphrase is a secret
    for secret in sorted({*secrets, *_known}, key=len, reverse=True):
        if secret:
            out = out.replace(secret, MASK)
    out = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", out)
    out = _HEADER.sub(lambda m: f"{m.group(1)}: {MASK}", out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", out)
    return _PAIR.sub(lambda m: f"{m.group('key')}{m.group('quote')}{MASK}", out)


# credential attribute names, as words: every common spelling of each is looked up on a broker
# (``api_key``, ``apiKey``, ``ApiKey``, ``API_KEY``, ``apikey``, each also with a leading ``_``)
CREDENTIAL_WORDS = (
    ("api", "key"),
    ("api", "secret"),
    ("api", "passphrase"),
    ("api", "password"),
    ("api", "token"),
    ("secret",),
    ("secret", "key"),
    ("secret", "access", "key"),
    ("access", "key"),
    ("password",),
    ("passphrase",),
    ("token",),
    ("access", "token"),
    ("auth", "token"),
    ("refresh", "token"),
    ("private", "key"),
    ("client", "secret"),
    ("trading", "password"),
    ("uid",),
    ("twofa",),
)


def _spellings(words: tuple[str, ...]) -> tuple[str, ...]:
    snake = "_".join(words)
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    plain = (snake, camel, camel[0].upper() + camel[1:], snake.upper(), "".join(words))
    return tuple(dict.fromkeys(p for name in plain for p in (name, f"_{name}")))


CREDENTIAL_ATTRIBUTES = tuple(
    dict.fromkeys(name for words in CREDENTIAL_WORDS for name in _spellings(words))
)


def secrets_of(obj: object, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Credential values a broker object holds under any common attribute spelling
    (``CREDENTIAL_ATTRIBUTES``), plus ``extra`` the user names: every non-empty string, any
    length."""
    found = [s for s in extra if isinstance(s, str) and s]
    for name in CREDENTIAL_ATTRIBUTES:
        try:
            value = getattr(obj, name, None)
        except Exception:  # a property that fails must not stop redaction
            continue
        if isinstance(value, str) and value:
            found.append(value)
    return tuple(dict.fromkeys(found))


_known: set[str] = set()  # every credential a guard in this process was built with
_known_lock = threading.Lock()


def register_secrets(secrets: Iterable[str]) -> None:
    """Remember credentials so that every broker_guard log line masks them, tracebacks included."""
    with _known_lock:
        _known.update(s for s in secrets if s)


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
