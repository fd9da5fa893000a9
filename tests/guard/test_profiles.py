"""Price extraction: what counts as a price decides whether a position is valued, so it is tested as
a property."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from broker_guard.core.validate import plain_price, ticker_price

numbers = st.one_of(st.floats(), st.integers(), st.decimals(allow_nan=False, allow_infinity=False))


class FloatSubclass(float):
    pass


@given(numbers)
def test_plain_price_is_always_a_finite_positive_float_or_none(value: Any) -> None:
    price = plain_price(value)
    expected = float(value) if float(value) > 0 and math.isfinite(float(value)) else None
    assert price == expected
    assert price is None or (isinstance(price, float) and price > 0 and math.isfinite(price))


@given(st.floats())
def test_float_subclasses_take_the_same_rule_as_floats(value: float) -> None:
    assert plain_price(FloatSubclass(value)) == plain_price(value)


def test_non_numbers_are_never_prices() -> None:
    for value in (True, False, "n/a", "nan", None, [1.0], {"last": 1.0}, b"1"):
        assert plain_price(value) is None
    assert plain_price(Decimal("0.15")) == 0.15


def test_ticker_price_prefers_last_then_the_mid() -> None:
    assert ticker_price({"last": 10.0, "bid": 1.0, "ask": 3.0}) == 10.0
    assert ticker_price({"last": None, "bid": 1.0, "ask": 3.0}) == 2.0
    assert ticker_price({"last": float("nan"), "bid": 1.0, "ask": None}) is None
    assert ticker_price(50.0) is None
