"""What an order does to exposure: the entry/exit rule every order path asks.

An exit may always pass; an entry is refused on a symbol the guard does not
trust, or while trading is halted. The side string alone does not decide:

- reduce-only (in keywords or ccxt ``params``), a close side, or a method
  that only ever reduces (``close_position``): an exit;
- spot: a buy is an entry; a sell is an exit unless the broker reports
  holding less than it sells (a spot account cannot go short, so when the
  holding cannot be read the sell stays an exit);
- margin and derivatives: a sell or a buy is an exit only when it reduces the
  position the broker reports (a sell of at most a long, a buy of at most a
  short); anything else, or a position that cannot be read, is an entry.

Pure: the caller reads the position (only when the verdict depends on it and
the symbol is one the guard would refuse) and hands it in.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

CLOSE_SIDES = frozenset({"close", "exit", "reduce"})
SELL_SIDES = frozenset({"sell"})  # "short", "long", "open" always open exposure: entries
BUY_SIDES = frozenset({"buy"})
_TOLERANCE = 1e-9  # relative: a float-rounded "sell all" is still all


class Intent(enum.Enum):
    EXIT = "exit"
    ENTRY = "entry"
    REDUCES_IF = "reduces_if"  # an exit when it reduces the reported position, else an entry


@dataclass(frozen=True)
class Order:
    """The facts about one order that decide whether it is an exit."""

    symbol: str
    side: str | None  # buy / sell / close ..., lower case; None when the method names no side
    amount: float | None  # None when the call does not say (or says it unreadably)
    reduce_only: bool = False
    only_reduces: bool = False  # the method can only reduce (close_position, reduce-only helpers)
    derivative: bool = False  # margin, swap, future, option: a sell can open a short


def intent(order: Order) -> Intent:
    if order.reduce_only or order.only_reduces or order.side in CLOSE_SIDES:
        return Intent.EXIT
    if order.side in SELL_SIDES or (order.derivative and order.side in BUY_SIDES):
        return Intent.REDUCES_IF
    return Intent.ENTRY


def reduces(order: Order, held: float | None) -> bool:
    """Whether ``order`` only reduces a holding of ``held`` (signed: a long above zero, a short
    below; None when the broker's answer could not be read)."""
    selling = order.side in SELL_SIDES
    if held is not None and not math.isfinite(held):
        held = None  # a holding no account has: unreadable
    if not order.derivative:
        if not selling:
            return False
        if held is None:
            return True  # spot cannot go short: the exchange refuses an oversell
        return held > 0 and (order.amount is None or _within(order.amount, held))
    if held is None or order.amount is None:
        return False  # cannot tell whether it closes or opens: an entry
    if selling:
        return held > 0 and _within(order.amount, held)
    return held < 0 and _within(order.amount, -held)


def _within(amount: float, held: float) -> bool:
    return 0 < amount <= held * (1 + _TOLERANCE)
