"""Response validation: which answers from a broker can be right (a price, a balance).

An answer that fails here is a failure of the call (``InvalidResponseError``),
counted and never remembered as a last known value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

_INF = math.inf


def plain_price(value: Any) -> float | None:
    """A price that can be right: a finite number above zero (bools and strings are not prices)."""
    # the common case first: the success path of every price call runs this
    if type(value) is float:
        return value if 0.0 < value < _INF else None  # NaN fails both comparisons
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    number = float(value)
    return number if number > 0 and math.isfinite(number) else None


def ticker_price(value: Any) -> float | None:
    """ccxt ticker: ``last``, else the bid/ask mid."""
    if not isinstance(value, Mapping):
        return None
    last = plain_price(value.get("last"))
    if last is not None:
        return last
    bid, ask = plain_price(value.get("bid")), plain_price(value.get("ask"))
    return (bid + ask) / 2 if bid is not None and ask is not None else None


_BALANCE_KEYS = ("free", "used", "total")


def is_valid_balance(value: Any) -> bool:
    """A finite, non-negative number, or a balance mapping (ccxt) whose amounts are finite and
    non-negative."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, Decimal)):
        return math.isfinite(value) and value >= 0
    if isinstance(value, Mapping):
        if not value:
            return False
        for key, item in value.items():
            if key == "info":
                continue
            amounts = item.values() if isinstance(item, Mapping) else (item,)
            for amount in amounts:
                if amount is None:
                    continue
                if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal)):
                    if isinstance(item, Mapping) or key in _BALANCE_KEYS:
                        return False
                    continue
                if not math.isfinite(amount) or (
                    amount < 0 and (key in _BALANCE_KEYS or isinstance(item, Mapping))
                ):
                    return False
        return True
    return False
