"""The entry/exit rule: an exit always passes the gate, an entry never passes a refusal; what an
order does decides, not its side string alone."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_guard.core.gate import Intent, Order, intent, reduces


def order(side: str | None, amount: float | None = 1.0, **facts: bool) -> Order:
    return Order("BTC/USDT", side, amount, **facts)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (order("buy"), Intent.ENTRY),
        (order("sell"), Intent.REDUCES_IF),
        (order("close"), Intent.EXIT),
        (order("buy", reduce_only=True), Intent.EXIT),
        (order(None, only_reduces=True), Intent.EXIT),
        (order("short"), Intent.ENTRY),  # opening words always open
        (order("long", derivative=True), Intent.ENTRY),
        (order("open", derivative=True), Intent.ENTRY),
        (order("buy", derivative=True), Intent.REDUCES_IF),
        (order("sell", derivative=True), Intent.REDUCES_IF),
        (order(None), Intent.ENTRY),  # no side, not a close: an entry
        (order("weird"), Intent.ENTRY),
    ],
)
def test_intent(facts: Order, expected: Intent) -> None:
    assert intent(facts) is expected


@pytest.mark.parametrize(
    ("facts", "held", "expected"),
    [
        (order("sell", 1.0), 1.0, True),
        (order("sell", 1.0 + 1e-12), 1.0, True),  # a float-rounded "sell all"
        (order("sell", 1.5), 1.0, False),  # spot: more than held
        (order("sell", 1.0), None, True),  # spot cannot go short: unreadable stays an exit
        (order("sell", None), 1.0, True),
        (order("sell", 1.0), 0.0, False),
        (order("sell", 1.0, derivative=True), 2.0, True),
        (order("sell", 3.0, derivative=True), 2.0, False),  # flips to a short
        (order("sell", 1.0, derivative=True), -2.0, False),  # adds to a short
        (order("sell", 1.0, derivative=True), None, False),  # unreadable: an entry
        (order("sell", 1.0, derivative=True), float("inf"), False),  # no account holds that
        (order("sell", 1.0, derivative=True), float("nan"), False),
        (order("sell", None, derivative=True), 2.0, False),
        (order("buy", 1.0, derivative=True), -2.0, True),
        (order("buy", 3.0, derivative=True), -2.0, False),
        (order("buy", 1.0, derivative=True), 2.0, False),
        (order("buy", 1.0), 5.0, False),  # a spot buy never reduces
        (order("sell", 0.0, derivative=True), 2.0, False),
        (order("sell", -1.0), 2.0, False),
    ],
)
def test_reduces(facts: Order, held: float | None, expected: bool) -> None:
    assert reduces(facts, held) is expected


amounts = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
helds = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))


@given(
    side=st.sampled_from(["buy", "sell", "close", "short", "long", None, "x"]),
    amount=amounts,
    held=helds,
    derivative=st.booleans(),
)
def test_a_derivatives_order_passing_as_an_exit_never_grows_or_flips_the_position(
    side: str | None, amount: float | None, held: float | None, derivative: bool
) -> None:
    """Property: a side-judged exit on margin/derivatives only ever moves the position toward zero,
    never past it; on spot it never sells more than held."""
    facts = Order("X/USD:USD", side, amount, derivative=derivative)
    if intent(facts) is not Intent.REDUCES_IF or not reduces(facts, held):
        return
    unreadable = held is None or not math.isfinite(held)
    assert not (unreadable and derivative)  # derivatives: an unreadable holding is an entry
    if held is None or unreadable:
        return  # spot cannot go short: the exchange refuses an oversell
    signed = -(amount or held) if side == "sell" else (amount or 0.0)
    after = held + signed
    assert abs(after) <= abs(held) * (1 + 1e-9) + 1e-12
    assert after == 0 or (after > 0) == (held > 0) or abs(after) <= abs(held) * 1e-9
