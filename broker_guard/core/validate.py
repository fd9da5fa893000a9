"""Response validation: which answers from a broker can be right (a price, a balance).

An answer that fails here is a failure of the call (``InvalidResponseError``),
counted and never remembered as a last known value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_INF = math.inf


def real_number(value: Any) -> float | None:
    """``value`` as a finite float when it is a real number: int, float, Decimal, a numpy (or any
    ``numbers.Real``) scalar, or a numeric string as some brokers send. None for NaN, infinities,
    sNaN, bools and anything else, never an exception: a broker's odd answer is an invalid
    response to count, not a crash."""
    if value.__class__ is float:
        return value if -_INF < value < _INF else None  # NaN fails both comparisons
    if isinstance(value, bool) or value.__class__.__name__ == "bool_":  # numpy's bool too
        return None
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except (InvalidOperation, ValueError):
            return None
    if isinstance(value, Decimal):
        if not value.is_finite():  # sNaN raises on any comparison or conversion
            return None
    elif not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return None
    return number if -_INF < number < _INF else None


def plain_price(value: Any) -> float | None:
    """A price that can be right: a finite real number above zero (see ``real_number``)."""
    # the common case first: the success path of every price call runs this
    if value.__class__ is float:
        return value if 0.0 < value < _INF else None  # NaN fails both comparisons
    number = real_number(value)
    return number if number is not None and number > 0 else None


def ticker_price(value: Any) -> float | None:
    """ccxt ticker: ``last``, else the bid/ask mid."""
    if not isinstance(value, Mapping):
        return None
    last = plain_price(value.get("last"))
    if last is not None:
        return last
    bid, ask = plain_price(value.get("bid")), plain_price(value.get("ask"))
    return (bid + ask) / 2 if bid is not None and ask is not None else None


def market_data(value: Any) -> float | None:
    """A symbol's market data (order book, candles, trades) can be right when it is a mapping or
    a list; the guard judges the call (refused when frozen, failures counted), not the data."""
    return 1.0 if isinstance(value, (Mapping, list, tuple)) else None


_BALANCE_KEYS = ("free", "used", "total")


def is_valid_balance(value: Any) -> bool:
    """A finite, non-negative real number, or a balance mapping (ccxt) whose amounts are finite
    and non-negative."""
    if not isinstance(value, Mapping):
        number = real_number(value)
        return number is not None and number >= 0
    if not value:
        return False
    for key, item in value.items():
        if key == "info":
            continue
        strict = isinstance(item, Mapping) or key in _BALANCE_KEYS  # amounts, not extra fields
        for amount in item.values() if isinstance(item, Mapping) else (item,):
            if amount is None:
                continue
            number = real_number(amount)
            if number is None:
                if strict or (isinstance(amount, numbers.Number) and not isinstance(amount, bool)):
                    return False
                continue
            if number < 0 and strict:
                return False
    return True


def stored_balance(value: Any) -> Any:
    """A valid balance as JSON can hold it: every real number a plain float (an int stays an
    int), ccxt's raw ``info`` left out. A Decimal or numpy value would not encode."""
    if isinstance(value, Mapping):
        return {str(k): stored_balance(v) for k, v in value.items() if k != "info"}
    if isinstance(value, (list, tuple)):
        return [stored_balance(v) for v in value]
    if value is None or isinstance(value, (str, bool)) or value.__class__ in (int, float):
        return value
    number = real_number(value)
    return number if number is not None else str(value)
