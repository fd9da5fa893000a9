"""Canonical symbol form, so that ``btc/usd``, ``BTC-USD`` and ``BTC_USD`` are one symbol."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[-_/ ]+")
known_symbols: dict[str, str] = {}  # spelling -> canonical form, read by the hot path; never edit
_CACHE_LIMIT = 100_000


def canonical_symbol(symbol: object) -> str:
    """Return ``BASE/QUOTE`` (upper case, ``/`` separated); a settle suffix ``:X`` is kept.

    Raises ``ValueError`` for anything that is not a non-empty string, so a
    ``None`` symbol never silently becomes a key.
    """
    try:
        return known_symbols[symbol]  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")
    main, colon, settle = symbol.strip().upper().partition(":")
    result = _SEPARATORS.sub("/", main).strip("/")
    if colon:
        result = f"{result}:{settle.strip()}"
    if len(known_symbols) < _CACHE_LIMIT:
        known_symbols[symbol] = result
    return result


def base_asset(symbol: str) -> str:
    """The asset bought or sold: ``ETH`` for ``ETH-USD``."""
    return canonical_symbol(symbol).split("/", 1)[0]


def quote_asset(symbol: str) -> str | None:
    """The asset prices are in: ``USD`` for ``ETH-USD``; None for a bare asset."""
    parts = canonical_symbol(symbol).split(":", 1)[0].split("/", 1)
    return parts[1] if len(parts) == 2 else None
