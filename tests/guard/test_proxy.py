from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker_guard import (
    GuardedBroker,
    GuardEvent,
    MemoryStore,
    MethodSpec,
    NothingToGuardError,
    SymbolFrozenError,
    SymbolRestrictedError,
)
from broker_guard.config import GuardConfig
from broker_guard.testing import PaperBroker


class BotBroker:
    """A bot's own broker class with extra methods and attributes."""

    fee_rate = 0.001

    def __init__(self) -> None:
        self.name = "bot-broker"
        self.connected = True
        self.log: list[str] = []

    def get_current_price(self, symbol: str) -> float:
        return 10.0

    def get_account_balance(self) -> float:
        return 100.0

    def cancel_all(self, reason: str = "") -> str:
        self.log.append(reason)
        return "cancelled"

    @property
    def status(self) -> str:
        return "online" if self.connected else "offline"

    def __len__(self) -> int:
        return 7


def test_drop_in_keeps_every_attribute_and_method(make_guard: Any) -> None:
    broker = BotBroker()
    guard = make_guard(broker)
    assert isinstance(guard, BotBroker) and isinstance(guard, GuardedBroker)
    assert guard.name == "bot-broker" and guard.fee_rate == 0.001 and guard.status == "online"
    assert guard.cancel_all("eod") == "cancelled" and broker.log == ["eod"]
    assert len(guard) == 7
    guard.connected = False  # writes go to the broker
    assert broker.connected is False and guard.status == "offline"
    assert guard.__wrapped__ is broker
    assert guard.get_current_price("X-USD") == 10.0 and guard.get_account_balance() == 100.0


def test_unguarded_methods_are_not_redefined(make_guard: Any) -> None:
    guard = make_guard(BotBroker())
    assert "cancel_all" not in type(guard).__dict__
    assert {"get_current_price", "get_account_balance"} <= set(type(guard).__dict__)


def test_wrapping_twice_is_refused(make_guard: Any) -> None:
    guard = make_guard(BotBroker())
    with pytest.raises(TypeError, match="already guarded"):
        GuardedBroker(guard, GuardConfig.load(env={}), store=MemoryStore())


def test_config_must_be_a_guard_config() -> None:
    from broker_guard import ConfigError

    with pytest.raises(ConfigError, match="GuardConfig"):
        GuardedBroker(BotBroker(), {"dust": {}}, store=MemoryStore())  # type: ignore[arg-type]


def test_async_broker_price_and_orders(make_guard: Any) -> None:
    class AsyncBroker:
        def __init__(self) -> None:
            self.orders: list[tuple[str, str]] = []

        async def get_current_price(self, symbol: str) -> float:
            if symbol == "DEAD-USD":
                raise ValueError("Price not available")
            return 5.0

        async def place_market_order(self, symbol: str, side: str, quantity: float) -> str:
            self.orders.append((symbol, side))
            return "ok"

    broker = AsyncBroker()
    guard = make_guard(broker)

    async def scenario() -> None:
        assert await guard.get_current_price("A-USD") == 5.0
        for _ in range(3):
            with pytest.raises(ValueError):
                await guard.get_current_price("DEAD-USD")
        with pytest.raises(SymbolFrozenError):
            await guard.get_current_price("DEAD-USD")
        with pytest.raises(SymbolFrozenError):
            await guard.place_market_order("DEAD-USD", "buy", 1)
        assert await guard.place_market_order("DEAD-USD", "sell", 1) == "ok"

    asyncio.run(scenario())
    assert broker.orders == [("DEAD-USD", "sell")]


def test_custom_profile_names_methods_and_symbol_parameters(make_guard: Any, clock: Any) -> None:
    class Vendor:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def quote(self, venue: str, ticker: str) -> float:
            raise LookupError(f"unknown product {ticker}")

        def cash(self) -> float:
            return 5.0

        def send(self, instrument: str, qty: float, direction: str) -> str:
            self.sent.append(direction)
            return "sent"

    profile = {
        "quote": MethodSpec("price", symbol="ticker"),
        "cash": "balance",
        "send": MethodSpec("order", symbol="instrument", side="direction"),
    }
    broker = Vendor()
    guard = GuardedBroker(
        broker,
        GuardConfig.load(env={}),
        store=MemoryStore(),
        profile=profile,
        clock=clock,
        sleep=clock.sleep,
    )
    for _ in range(3):
        with pytest.raises(LookupError):
            guard.quote("nyse", ticker="ZZZ-USD")
    assert guard.freeze_manager.is_frozen("ZZZ-USD")
    with pytest.raises(SymbolFrozenError):
        guard.send("ZZZ-USD", 1, direction="buy")
    assert guard.send("ZZZ-USD", 1, "sell") == "sent" and broker.sent == ["sell"]
    assert guard.cash() == 5.0


def test_events_reach_the_hook_and_a_failing_hook_breaks_nothing(clock: Any) -> None:
    seen: list[GuardEvent] = []

    def hook(event: GuardEvent) -> None:
        seen.append(event)
        raise RuntimeError("hook bug")

    broker = PaperBroker(prices={"ETH-USD": 1.0})
    guard = GuardedBroker(
        broker,
        GuardConfig.load(env={}),
        store=MemoryStore(),
        clock=clock,
        sleep=clock.sleep,
        on_event=hook,
    )
    broker.fail_next("get_account_balance", 1)
    guard.get_account_balance()
    broker.delist("ETH-USD")
    for _ in range(3):
        with pytest.raises(Exception, match="Price not available"):
            guard.get_current_price("ETH-USD")
    guard.freeze_manager.unfreeze_symbol("ETH-USD", "ok")
    broker.fail_next("get_account_balance", 3)
    guard.get_account_balance()
    kinds = [e.kind for e in seen]
    assert {"retry", "failure", "freeze", "unfreeze", "fallback"} <= set(kinds)


def test_health_alerts(make_guard: Any, paper: PaperBroker, clock: Any) -> None:
    guard = make_guard(paper, freeze={"alert_frozen_count": 1})
    assert guard.health()["ok"]
    guard.get_account_balance()
    paper.fail_next("get_account_balance", 3)
    clock.advance(31 * 60)
    guard.get_account_balance()
    for symbol in ("A-USD", "B-USD"):
        guard.freeze_manager.freeze(symbol)
    health = guard.health()
    assert not health["ok"]
    text = " | ".join(health["alerts"])
    assert (
        "frozen symbols: 2" in text
        and "Consecutive balance fetch errors: 3" in text
        and "Balance data is old" in text
    )


def test_secrets_in_broker_errors_are_redacted_from_logs(
    make_guard: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Leaky:
        apiKey = "AKIA-SECRET-KEY-123"

        def get_current_price(self, symbol: str) -> float:
            raise ValueError(
                "not found: GET /ticker?apiKey=AKIA-SECRET-KEY-123&signature=abcdef0123"
            )

    guard = make_guard(Leaky())
    with pytest.raises(ValueError):
        guard.get_current_price("Q-USD")
    assert "AKIA-SECRET-KEY-123" not in caplog.text and "abcdef0123" not in caplog.text
    assert "AKIA-SECRET-KEY-123" not in repr(guard)


def test_each_guard_has_its_own_methods_and_sees_a_method_patched_on_the_broker(
    make_guard: Any,
) -> None:
    first, second = BotBroker(), BotBroker()
    guard_one, guard_two = make_guard(first), make_guard(second)
    assert type(guard_one) is not type(guard_two)  # closures over each guard's own parts
    second.get_current_price = lambda symbol: 99.0  # type: ignore[method-assign]
    assert guard_one.get_current_price("X-USD") == 10.0
    assert guard_two.get_current_price("X-USD") == 99.0


def test_a_guard_whose_init_never_ran_refuses_instead_of_passing_through() -> None:
    broker = PaperBroker(prices={"BTC-USD": 1.0}, cash=1_000.0)
    half_built = GuardedBroker.__new__(GuardedBroker, broker)
    with pytest.raises(
        RuntimeError, match=r"^GuardedBroker\.place_market_order: .*not initialised"
    ):
        half_built.place_market_order("BTC-USD", "buy", 1.0)
    assert broker.orders == []


class OwnNames:
    """A broker whose methods the generic profile does not know."""

    def balance(self) -> float:
        return 100.0

    def price(self, symbol: str) -> float:
        return 1.0

    def positions(self) -> list[Any]:
        return []


def test_a_broker_the_profile_finds_nothing_on_is_refused_with_what_was_looked_for() -> None:
    with pytest.raises(NothingToGuardError) as raised:
        GuardedBroker(OwnNames(), store=MemoryStore())
    message = str(raised.value)
    assert "get_current_price" in message and "place_market_order" in message
    assert "balance, positions, price" in message  # the broker's own, to map
    assert "profile=" in message


def test_strict_false_warns_once_and_mapping_the_methods_guards_them() -> None:
    with pytest.warns(UserWarning, match="nothing would be guarded"):
        loose = GuardedBroker(OwnNames(), store=MemoryStore(), strict=False)
    assert loose.price("AUT-USD") == 1.0  # unguarded, as warned
    mapped = GuardedBroker(
        OwnNames(), store=MemoryStore(), profile={"balance": "balance", "price": "price"}
    )
    with pytest.raises(SymbolRestrictedError):
        mapped.price("AUT-USD")
