"""Sort a broker's exception into the kind of failure it is, which decides retry and freeze.

ccxt exceptions are recognised by class name along the MRO, so ccxt need not
be installed; HTTP status codes and plain-message heuristics cover bots' own
broker classes, which often raise bare ``Exception("Network error")``.
"""

from __future__ import annotations

import enum
import re
import socket
from collections.abc import Mapping


class FailureKind(enum.Enum):
    TRANSIENT = "transient"  # connection, timeout, unavailable, 5xx: retry
    RATE_LIMIT = "rate_limit"  # transient too, may carry a retry-after hint
    AUTH = "auth"  # authentication or permission: surface at once
    BAD_SYMBOL = "bad_symbol"  # about one symbol: counts toward freezing
    BAD_ARGUMENT = "bad_argument"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_RESPONSE = "invalid_response"  # None, NaN, negative...: about the symbol
    UNKNOWN = "unknown"

    @property
    def retryable(self) -> bool:
        return self in (FailureKind.TRANSIENT, FailureKind.RATE_LIMIT)


_CCXT_NAMES: Mapping[str, FailureKind] = {
    # most specific first: the first match along the MRO wins
    "RateLimitExceeded": FailureKind.RATE_LIMIT,
    "DDoSProtection": FailureKind.RATE_LIMIT,
    "BadSymbol": FailureKind.BAD_SYMBOL,
    "InsufficientFunds": FailureKind.INSUFFICIENT_FUNDS,
    "AuthenticationError": FailureKind.AUTH,
    "PermissionDenied": FailureKind.AUTH,
    "AccountSuspended": FailureKind.AUTH,
    "AccountNotEnabled": FailureKind.AUTH,
    "InvalidNonce": FailureKind.TRANSIENT,
    "RequestTimeout": FailureKind.TRANSIENT,
    "ExchangeNotAvailable": FailureKind.TRANSIENT,
    "OnMaintenance": FailureKind.TRANSIENT,
    "NetworkError": FailureKind.TRANSIENT,
    "InvalidOrder": FailureKind.BAD_ARGUMENT,
    "ArgumentsRequired": FailureKind.BAD_ARGUMENT,
    "BadRequest": FailureKind.BAD_ARGUMENT,
    "NotSupported": FailureKind.BAD_ARGUMENT,
    "InvalidResponseError": FailureKind.INVALID_RESPONSE,
    "SymbolNotFound": FailureKind.BAD_SYMBOL,
    "TransientBrokerError": FailureKind.TRANSIENT,
    "RateLimitError": FailureKind.RATE_LIMIT,
    "AuthError": FailureKind.AUTH,
}

_MESSAGE_RULES: tuple[tuple[re.Pattern[str], FailureKind], ...] = (
    (re.compile(r"rate.?limit|too many requests|\b429\b|throttl", re.I), FailureKind.RATE_LIMIT),
    (
        re.compile(
            r"unauthori[sz]ed|authenticat|invalid api.?key|api.?key.*(invalid|revoked|expired)"
            r"|permission|forbidden|\b401\b|\b403\b",
            re.I,
        ),
        FailureKind.AUTH,
    ),
    (re.compile(r"insufficient (funds|balance)", re.I), FailureKind.INSUFFICIENT_FUNDS),
    (
        re.compile(
            r"delisted|not available|not found"
            r"|unknown (asset )?(symbol|product|pair|market)"
            r"|invalid (asset )?(symbol|product|pair|market)"
            r"|no such (symbol|product|market)|suspended|halted|bad symbol|invalid price",
            re.I,
        ),
        FailureKind.BAD_SYMBOL,
    ),
    (
        re.compile(
            r"network|connection|timed? ?out|temporar|unavailable|maintenance|\b50[0234]\b|bad "
            r"gateway"
            r"|reset by peer|broken pipe|try again",
            re.I,
        ),
        FailureKind.TRANSIENT,
    ),
)


def _status_code(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def classify(
    exc: BaseException | str, transient: tuple[type[BaseException], ...] = ()
) -> FailureKind:
    """The kind of failure ``exc`` is; a plain message string is classified by its words.

    ``transient``: exception types the caller knows to be passing (a guard's
    ``transient_exceptions``), whatever their name or message says.
    """
    if isinstance(exc, str):
        return _classify_message(exc)
    if transient and isinstance(exc, transient):
        return FailureKind.TRANSIENT
    for cls in type(exc).__mro__:
        kind = _CCXT_NAMES.get(cls.__name__)
        if kind is not None:
            return kind
    if isinstance(exc, (TimeoutError, ConnectionError, socket.gaierror)):
        return FailureKind.TRANSIENT
    status = _status_code(exc)
    if status is not None:
        if status == 429:
            return FailureKind.RATE_LIMIT
        if status >= 500:
            return FailureKind.TRANSIENT
        if status in (401, 403):
            return FailureKind.AUTH
        if status == 404:
            return FailureKind.BAD_SYMBOL
    kind = _classify_message(str(exc))
    if kind is FailureKind.UNKNOWN and isinstance(exc, (ValueError, TypeError, KeyError)):
        return FailureKind.BAD_ARGUMENT
    return kind


def _classify_message(message: str) -> FailureKind:
    for pattern, kind in _MESSAGE_RULES:
        if pattern.search(message):
            return kind
    return FailureKind.UNKNOWN


def retry_after_seconds(exc: BaseException) -> float | None:
    """A retry-after hint carried by the exception (attribute or HTTP header), in seconds."""
    value = getattr(exc, "retry_after", None)
    if value is None:
        headers = getattr(getattr(exc, "response", None), "headers", None) or getattr(
            exc, "headers", None
        )
        if isinstance(headers, Mapping):
            value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if seconds is None or not (seconds >= 0) or seconds == float("inf"):
        return None
    return seconds
