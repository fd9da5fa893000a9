"""The trading gate as a property: over random sequences of freezes (open-ended and timed),
unfreezes, halts, resumes, price calls, orders (entries and exits; spot and derivatives; reduce-only
in keywords or params, true or false) and clock jumps both ways, no entry ever reaches the broker
for a frozen or restricted symbol or while trading is halted, and no exit is ever refused.

The oracle is written here from the rule as the README states it, not from ``core.gate``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from broker_guard import (
    GuardConfig,
    GuardedBroker,
    GuardRefusedError,
    MemoryStore,
    MethodSpec,
    Profile,
    TradingHaltedError,
)
from broker_guard.config import FreezePolicy
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guard.profiles import GENERIC
from broker_guard.testing import FakeClock

SPOT = ("AAA-USD", "BBB-USD")
DERIVATIVES = ("CCC/USD:USD", "DDD/USD:USD")
RESTRICTED = "AUT-USD"  # shipped restricted
SYMBOLS = (*SPOT, *DERIVATIVES, RESTRICTED)
TRUE_FLAGS = (True, 1, "true", "TRUE")
FALSE_FLAGS = (False, 0, "false", None)


class Rejected(Exception):
    """The venue's own refusal (a spot oversell, a reduce-only order that would not reduce)."""


class Venue:
    """A broker with spot and derivatives markets, positions it reports, and orders it fills."""

    def __init__(self) -> None:
        self.held: dict[str, float] = {s: 0.0 for s in SYMBOLS}
        self.orders: list[tuple[str, str, float]] = []

    def get_current_price(self, symbol: str) -> float:
        return 10.0

    def get_positions(self) -> list[dict[str, Any]]:
        return [{"symbol": s, "quantity": q} for s, q in self.held.items() if q]

    def place_order(
        self,
        symbol: str,
        side: str,
        quantity: float,
        reduce_only: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        signed = quantity if side == "buy" else -quantity
        before = self.held[symbol]
        after = before + signed
        if symbol in (*SPOT, RESTRICTED) and after < -1e-12:
            raise Rejected(f"cannot sell {quantity}: {before} held")
        reducing = abs(after) <= abs(before) and (after == 0 or (after > 0) == (before > 0))
        reduce = flag(reduce_only) or flag((params or {}).get("reduceOnly"))
        if reduce and not reducing:
            raise Rejected("reduce-only order would not reduce")
        self.held[symbol] = after
        self.orders.append((symbol, side, quantity))
        return {"status": "filled"}


def flag(value: Any) -> bool:
    return value is True or (value == 1 and type(value) is int) or str(value).lower() == "true"


PROFILE = dataclasses.replace(
    Profile.custom(
        {"place_order": MethodSpec("order", symbol="symbol", side="side", params="params")},
        base=GENERIC,
    ),
    market=lambda broker, symbol, params: symbol.endswith(":USD"),
)


def is_exit(symbol: str, side: str, quantity: float, reduce: bool, held: float) -> bool:
    """The README's rule: reduce-only is an exit; a spot sell of at most the holding; on
    derivatives a sell of at most a long or a buy of at most a short."""
    if reduce:
        return True
    if symbol not in DERIVATIVES:
        return side == "sell" and 0 < quantity <= held
    if side == "sell":
        return held > 0 and quantity <= held
    return held < 0 and quantity <= -held


class GateMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.venue = Venue()
        config = GuardConfig.load(
            env={}, guard={"refresh_interval_seconds": 0.0}, freeze={"auto_unfreeze": True}
        )
        self.guard: Any = GuardedBroker(
            self.venue,
            config,
            store=self.store,
            profile=PROFILE,
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        self.operator = SymbolFreezeManager(
            FreezePolicy(), store=self.store, clock=self.clock, refresh_interval=0.0
        )
        self.frozen: set[str] = set()
        self.halted = False

    @rule(symbol=st.sampled_from(SYMBOLS), timed=st.booleans())
    def freeze(self, symbol: str, timed: bool) -> None:
        self.operator.freeze(symbol, "operator", for_hours=1.0 if timed else None)
        self.frozen.add(symbol)

    @rule(symbol=st.sampled_from(SYMBOLS))
    def unfreeze(self, symbol: str) -> None:
        self.operator.unfreeze_symbol(symbol, "reviewed")
        self.frozen.discard(symbol)

    @rule(by_guard=st.booleans())
    def halt(self, by_guard: bool) -> None:
        (self.guard.freeze_manager if by_guard else self.operator).halt("incident")
        self.halted = True

    @rule()
    def resume(self) -> None:
        self.operator.resume("checked")
        self.halted = False

    @rule(seconds=st.sampled_from([1.0, 600.0, 3601.0, 25 * 3600.0]), wall_only=st.booleans())
    def time_passes(self, seconds: float, wall_only: bool) -> None:
        if wall_only:
            self.clock.step(-seconds)  # the wall clock steps back: nothing may loosen
        else:
            self.clock.advance(seconds)

    @rule(symbol=st.sampled_from(SYMBOLS))
    def price(self, symbol: str) -> None:
        try:
            assert self.guard.get_current_price(symbol) == 10.0
        except GuardRefusedError:
            assert symbol in self.frozen or symbol == RESTRICTED
            return
        assert symbol != RESTRICTED  # prices answer while halted, never for a restricted symbol
        self.frozen.discard(symbol)  # a timed freeze's probe succeeded: unfrozen

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        side=st.sampled_from(["buy", "sell"]),
        quantity=st.sampled_from([0.5, 1.0, 2.0]),
        how=st.sampled_from(["positional", "keywords", "reduce kwarg", "reduce params"]),
        value=st.sampled_from(TRUE_FLAGS + FALSE_FLAGS),
    )
    def order(self, symbol: str, side: str, quantity: float, how: str, value: Any) -> None:
        reduce = how.startswith("reduce") and value in TRUE_FLAGS and value is not False
        exit_order = is_exit(symbol, side, quantity, reduce, self.venue.held[symbol])
        blocked = self.halted or symbol in self.frozen or symbol == RESTRICTED
        sent = len(self.venue.orders)
        args: tuple[Any, ...] = (symbol, side, quantity)
        kwargs: dict[str, Any] = {}
        if how == "keywords":
            args, kwargs = (), {"symbol": symbol, "side": side, "quantity": quantity}
        elif how == "reduce kwarg":
            kwargs = {"reduce_only": value}
        elif how == "reduce params":
            kwargs = {"params": {"reduceOnly": value}}
        try:
            self.guard.place_order(*args, **kwargs)
        except GuardRefusedError as refused:
            assert not exit_order, f"an exit was refused: {refused}"
            assert blocked, f"an order on a trusted symbol was refused: {refused}"
            if self.halted and symbol != RESTRICTED and symbol not in self.frozen:
                assert isinstance(refused, TradingHaltedError)
            assert len(self.venue.orders) == sent
            return
        except Rejected:
            assert len(self.venue.orders) == sent
            return
        if blocked:
            assert exit_order, f"an entry reached the broker: {symbol} {side} {quantity} {how}"

    @invariant()
    def halt_is_seen(self) -> None:
        if getattr(self, "guard", None) is not None:
            stats = self.guard.freeze_manager.get_stats()  # read after a refresh
            assert (stats["halted"] is not None) == self.halted


TestGate = GateMachine.TestCase
TestGate.settings = pytest.importorskip("hypothesis").settings(stateful_step_count=40)
