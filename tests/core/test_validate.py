"""Numbers a broker may send: every real numeric type is a valid price or balance when finite and
positive; NaN, infinities, sNaN and non-numbers are invalid, and never raise."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_guard import InvalidResponseError, JsonFileStore
from broker_guard.core.validate import is_valid_balance, plain_price, real_number, stored_balance

np = pytest.importorskip("numpy")

VALID = [
    1,
    2.5,
    Decimal("0.15"),
    Fraction(3, 2),
    "0.15",
    " 42 ",
    "1e3",
    np.float32(0.25),
    np.float64(50_000.0),
    np.int64(3),
    np.uint8(7),
    np.float16(1.5),
]
INVALID = [
    None,
    True,
    np.bool_(True),
    math.nan,
    math.inf,
    -math.inf,
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    "nan",
    "-inf",
    "sNaN",
    "n/a",
    "",
    b"1",
    np.float32("nan"),
    np.float64("inf"),
    [1.0],
    {"last": 1.0},
    10**400,  # no float holds it
]


@pytest.mark.parametrize("value", VALID, ids=repr)
def test_every_real_numeric_type_is_a_price_and_a_balance(value: Any) -> None:
    assert plain_price(value) == pytest.approx(float(value))
    assert is_valid_balance(value)
    assert is_valid_balance({"total": {"BTC": value}, "free": {"BTC": value}})


@pytest.mark.parametrize("value", INVALID, ids=repr)
def test_non_finite_and_non_numbers_are_neither_prices_nor_balances(value: Any) -> None:
    assert plain_price(value) is None
    if not isinstance(value, dict):  # a mapping is a ccxt-shaped balance
        assert not is_valid_balance(value)
    if value is not None:  # no amount is no amount
        assert not is_valid_balance({"total": {"BTC": value}})


def test_a_decimal_or_numpy_balance_is_stored_as_json_numbers(tmp_path: Path) -> None:
    balance = {"total": {"BTC": Decimal("0.5"), "USD": np.int64(100)}, "info": {"raw": object()}}
    stored = stored_balance(balance)
    assert stored == {"total": {"BTC": 0.5, "USD": 100.0}}
    store = JsonFileStore(tmp_path)
    store.update("balances", lambda doc: doc.update(value=stored))
    assert store.read("balances")["value"] == stored


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),  # NaN, sNaN and infinities included
    st.fractions(),
    st.text(max_size=12),
    st.from_regex(r"\A\s?-?(\d{1,5}(\.\d{0,4})?|inf|nan|snan)\s?\Z"),
    st.binary(max_size=4),
)


@given(anything)
def test_real_number_is_always_a_finite_float_or_none_and_never_raises(value: Any) -> None:
    number = real_number(value)
    assert number is None or (type(number) is float and math.isfinite(number))
    price = plain_price(value)
    assert price is None or price > 0
    is_valid_balance(value)  # never raises
    is_valid_balance({"total": {"X": value}})


def test_numpy_prices_pass_and_never_freeze_a_healthy_symbol(make_guard: Any) -> None:
    answers = iter([np.float32(0.5), np.int64(2), np.float64(3.0), Decimal("4"), "5.5"] * 2)

    class NumpyBroker:
        def get_current_price(self, symbol: str) -> Any:
            return next(answers)

        def get_account_balance(self) -> Any:
            return np.int64(1000)

    guard = make_guard(NumpyBroker())
    for _ in range(10):
        assert float(guard.get_current_price("ADA-USD")) > 0  # the broker's own value
    assert not guard.freeze_manager.is_frozen("ADA-USD")
    assert guard.freeze_manager.get_failure_count("ADA-USD") == 0
    assert guard.get_account_balance() == 1000


@pytest.mark.parametrize("bad", [Decimal("sNaN"), np.float32("nan"), "inf"], ids=repr)
def test_a_signalling_nan_is_an_invalid_response_counted_not_a_bare_error(
    make_guard: Any, bad: Any
) -> None:
    class Odd:
        def get_current_price(self, symbol: str) -> Any:
            return bad

    guard = make_guard(Odd())
    for count in (1, 2):
        with pytest.raises(InvalidResponseError, match="invalid price"):
            guard.get_current_price("ADA-USD")
        assert guard.freeze_manager.get_failure_count("ADA-USD") == count


def test_a_numpy_balance_is_kept_as_the_last_known_on_disk(make_guard: Any, tmp_path: Path) -> None:
    calls = iter(
        [Decimal("250.5"), ConnectionError("down"), ConnectionError("down")]
        + [ConnectionError("down")] * 6
    )

    class Broker:
        def get_account_balance(self) -> Any:
            answer = next(calls)
            if isinstance(answer, Exception):
                raise answer
            return answer

    store = JsonFileStore(tmp_path / "state")
    guard = make_guard(Broker(), store=store)
    assert guard.get_account_balance() == Decimal("250.5")
    assert guard.get_account_balance() == Decimal("250.5")  # the fallback, after a JSON round trip
    saved = store.read("balances")["balances"]
    assert [r["value"] for r in saved.values()] == [250.5]
