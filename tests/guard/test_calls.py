"""The guarded call bodies: the probe slot after a cooldown is settled or released on every path,
for sync and async brokers, through the price, tickers and order paths; generated methods carry
the broker method's name and signature."""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from broker_guard import (
    GuardConfig,
    GuardedBroker,
    GuardRefusedError,
    MemoryStore,
    MethodSpec,
    Profile,
    SymbolFrozenError,
    TradingHaltedError,
)
from broker_guard.testing import FakeClock, PaperBroker

SYMBOL = "SOL/USDT"
COOLDOWN_S = 3600


class BadSymbol(Exception):  # classified by name, as ccxt's own class would be
    pass


class NetworkError(Exception):
    pass


class GuardInternalError(RuntimeError):
    pass


class Exchange:
    """A ccxt-shaped exchange: ``fail`` is raised by every market-data call while set."""

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.calls: list[str] = []
        self.orders: list[tuple[str, str]] = []

    def fetch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append(f"ticker {symbol}")
        if self.fail is not None:
            raise self.fail
        return {"symbol": symbol, "last": 100.0}

    def fetch_tickers(self, symbols: list[str] | None = None, params: Any = None) -> dict[str, Any]:
        self.calls.append(f"tickers {symbols}")
        if self.fail is not None:
            raise self.fail
        return {s: {"symbol": s, "last": 100.0} for s in symbols or [SYMBOL]}

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: Any = None,
        params: Any = None,
    ) -> dict[str, Any]:
        self.orders.append((symbol, side))
        if self.fail is not None:
            raise self.fail
        return {"id": str(len(self.orders)), "status": "closed"}


class AsyncExchange(Exchange):
    async def fetch_ticker(  # type: ignore[override]
        self, symbol: str, params: Any = None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        return Exchange.fetch_ticker(self, symbol, params)

    async def fetch_tickers(  # type: ignore[override]
        self, symbols: Any = None, params: Any = None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        return Exchange.fetch_tickers(self, symbols, params)

    async def create_order(  # type: ignore[override]
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: Any = None,
        params: Any = None,
    ) -> dict[str, Any]:
        return Exchange.create_order(self, symbol, type, side, amount, price, params)


def run(value: Any) -> Any:
    return asyncio.run(_await(value)) if inspect.isawaitable(value) else value


async def _await(value: Any) -> Any:
    return await value


def cooled_down_guard(is_async: bool) -> tuple[Any, Exchange, FakeClock]:
    """A guard whose SOL/USDT was frozen and whose cooldown is over: the next price call is the
    probe."""
    exchange: Exchange = AsyncExchange() if is_async else Exchange()
    clock = FakeClock()
    config = GuardConfig.load(
        env={},
        freeze={"auto_unfreeze": True, "cooldown_hours": COOLDOWN_S / 3600},
        guard={"heartbeat_seconds": 0},  # the store's next update is the probe's, not a beat
    )
    guard = GuardedBroker(
        exchange, config, store=MemoryStore(), profile="ccxt", clock=clock, sleep=clock.sleep
    )
    guard.freeze_manager.freeze(SYMBOL, "test", for_hours=COOLDOWN_S / 3600)
    clock.advance(COOLDOWN_S + 1)
    return guard, exchange, clock


def price(guard: Any) -> Any:
    return run(guard.fetch_ticker(SYMBOL))


def tickers(guard: Any) -> Any:
    return run(guard.fetch_tickers([SYMBOL]))


PATHS: dict[str, Callable[[Any], Any]] = {"price": price, "tickers": tickers}


def assert_probe_slot_free(guard: Any, exchange: Exchange) -> None:
    """The slot is free when the next price call reaches the exchange instead of being refused."""
    exchange.fail = None
    before = len(exchange.calls)
    assert price(guard)["last"] == 100.0
    assert len(exchange.calls) == before + 1
    assert not guard.freeze_manager.is_frozen(SYMBOL)  # the probe succeeded: unfrozen


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_probe_that_succeeds_unfreezes(path: str, is_async: bool) -> None:
    guard, exchange, _clock = cooled_down_guard(is_async)
    PATHS[path](guard)
    assert not guard.freeze_manager.is_frozen(SYMBOL)
    assert_probe_slot_free(guard, exchange)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_probe_that_fails_on_the_symbol_refreezes_and_frees_the_slot(is_async: bool) -> None:
    guard, exchange, clock = cooled_down_guard(is_async)
    exchange.fail = BadSymbol("symbol delisted")
    with pytest.raises(BadSymbol):
        price(guard)
    with pytest.raises(SymbolFrozenError):  # frozen again, for a new cooldown
        price(guard)
    clock.advance(COOLDOWN_S + 1)
    assert_probe_slot_free(guard, exchange)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_probe_that_fails_transiently_frees_the_slot_without_a_verdict(
    path: str, is_async: bool
) -> None:
    """Before the single body, a failing fetch_tickers kept the slot: the symbol was never probed
    again."""
    guard, exchange, _clock = cooled_down_guard(is_async)
    exchange.fail = NetworkError("connection reset")
    with pytest.raises(NetworkError):
        PATHS[path](guard)
    # still cooled down: no verdict either way
    assert guard.freeze_manager.is_frozen(SYMBOL) is False
    assert_probe_slot_free(guard, exchange)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_cancelled_probe_frees_the_slot(path: str) -> None:
    guard, exchange, _clock = cooled_down_guard(is_async=True)
    exchange.fail = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        PATHS[path](guard)
    assert_probe_slot_free(guard, exchange)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_probe_whose_answer_is_invalid_refreezes_and_frees_the_slot(
    path: str, is_async: bool
) -> None:
    guard, exchange, clock = cooled_down_guard(is_async)
    original = exchange.fetch_tickers if path == "tickers" else exchange.fetch_ticker

    def invalid(*args: Any, **kwargs: Any) -> Any:
        if path == "tickers":
            return {SYMBOL: {"symbol": SYMBOL, "last": None}}
        return {"symbol": SYMBOL, "last": float("nan")}

    async def invalid_async(*args: Any, **kwargs: Any) -> Any:
        return invalid()

    setattr(exchange, original.__name__, invalid_async if is_async else invalid)
    answer = None
    try:
        answer = PATHS[path](guard)
    except Exception as exc:
        assert "invalid price" in str(exc)
    if path == "tickers":
        assert answer == {}  # an invalid ticker is left out of the answer
    delattr(exchange, original.__name__)
    with pytest.raises(SymbolFrozenError):
        price(guard)
    clock.advance(COOLDOWN_S + 1)
    assert_probe_slot_free(guard, exchange)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("outcome", ["symbol failure", "success"])
def test_an_exception_inside_the_guard_frees_the_slot(
    path: str, is_async: bool, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store raising while the probe's verdict is saved: the error surfaces, the slot is
    free."""
    guard, exchange, _clock = cooled_down_guard(is_async)
    store = guard.guard_context.store
    real_update = store.update

    def broken_update(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(store, "update", real_update)  # fails once
        raise GuardInternalError("bug inside the guard")

    monkeypatch.setattr(store, "update", broken_update)
    if outcome == "symbol failure":
        exchange.fail = BadSymbol("symbol delisted")
    with pytest.raises((GuardInternalError, BadSymbol)):
        PATHS[path](guard)
    if outcome == "symbol failure" and path == "tickers":
        store.update = real_update  # a failed batch records nothing: the store was never asked
    assert_probe_slot_free(guard, exchange)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("fails", [False, True], ids=["fills", "broker raises"])
def test_orders_never_take_the_probe_slot(is_async: bool, side: str, fails: bool) -> None:
    """An entry after the cooldown is refused (a price call must succeed first); an exit passes,
    fills or fails, and the probe stays for the next price call."""
    guard, exchange, _clock = cooled_down_guard(is_async)
    exchange.fail = NetworkError("timeout") if fails else None
    if side == "buy":
        with pytest.raises(SymbolFrozenError, match="order refused"):
            run(guard.create_order(SYMBOL, "market", "buy", 1.0))
        assert exchange.orders == []
    elif fails:
        with pytest.raises(NetworkError):
            run(guard.create_order(SYMBOL, "market", "sell", 1.0))
    else:
        run(guard.create_order(SYMBOL, "market", "sell", 1.0))
    assert_probe_slot_free(guard, exchange)


def test_two_callers_get_one_probe() -> None:
    guard, _exchange, _clock = cooled_down_guard(is_async=False)
    manager = guard.freeze_manager
    canon = "SOL/USDT"
    assert manager.admit(canon) == 1  # the probe
    with pytest.raises(SymbolFrozenError):
        manager.admit(canon)  # the second caller waits for the verdict
    manager.end_probe(canon)
    assert manager.admit(canon) == 1


def test_generated_methods_carry_the_broker_methods_name_and_signature() -> None:
    broker = PaperBroker(prices={"BTC-USD": 1.0})
    guard = GuardedBroker(broker, GuardConfig.load(env={}), store=MemoryStore())
    method = guard.get_current_price
    assert method.__name__ == "get_current_price"
    assert method.__qualname__ == "PaperBroker.get_current_price"
    assert inspect.signature(method) == inspect.signature(broker.get_current_price)
    assert method.__doc__ == PaperBroker.get_current_price.__doc__
    broker.delist("BTC-USD")
    try:
        guard.get_current_price("BTC-USD")
    except Exception as exc:
        names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert names[1] == "get_current_price"  # the guard's frame is named like the broker's method


def test_async_generated_methods_stay_coroutine_functions() -> None:
    guard = GuardedBroker(
        AsyncExchange(), GuardConfig.load(env={}), store=MemoryStore(), profile="ccxt"
    )
    assert inspect.iscoroutinefunction(guard.fetch_ticker)
    assert guard.fetch_ticker.__name__ == "fetch_ticker"
    assert list(inspect.signature(guard.fetch_tickers).parameters) == ["symbols", "params"]


def test_generated_methods_offer_no_way_around_the_guard() -> None:
    """No ``__wrapped__``: ``inspect.unwrap`` must not hand out the broker's unguarded function."""
    broker = PaperBroker(prices={"AUT-USD": 1.0}, cash=1_000.0)
    guard = GuardedBroker(broker, GuardConfig.load(env={}), store=MemoryStore())
    assert not hasattr(guard.place_market_order, "__wrapped__")
    unwrapped = inspect.unwrap(guard.place_market_order)
    with pytest.raises(GuardRefusedError):  # AUT-USD ships restricted
        unwrapped("AUT-USD", "buy", 1.0)
    assert broker.orders == []


class OddBroker:
    """Methods that are not plain functions on the class."""

    def __init__(self) -> None:
        self.get_price = self.quote  # an instance attribute: a bound method of another name

    @staticmethod
    def get_current_price(self: Any, symbol: str | None = None) -> float:
        return 1.0

    def quote(self, ticker: str, venue: str = "x") -> float:
        return 2.0


def test_odd_broker_methods_get_their_own_signatures() -> None:
    guard = GuardedBroker(OddBroker(), GuardConfig.load(env={}), store=MemoryStore())
    assert guard.get_current_price(None, "BTC-USD") == 1.0  # a static method taking "self"
    assert guard.get_price.__name__ == "get_price"
    assert list(inspect.signature(guard.get_price).parameters) == ["ticker", "venue"]


def test_a_probe_whose_price_extractor_raises_frees_the_slot() -> None:
    """An exception inside the guard while judging a probe's answer: the slot comes back."""
    from broker_guard import MethodSpec

    calls = {"n": 0}

    def flaky_extract(value: Any) -> float | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise GuardInternalError("extractor bug")
        return float(value["last"]) if isinstance(value, dict) else None

    exchange = Exchange()
    clock = FakeClock()
    spec = MethodSpec("price", symbol="symbol", price=flaky_extract)
    config = GuardConfig.load(env={}, freeze={"auto_unfreeze": True, "cooldown_hours": 1.0})
    guard = GuardedBroker(
        exchange, config, store=MemoryStore(), profile={"fetch_ticker": spec}, clock=clock
    )
    guard.freeze_manager.freeze(SYMBOL, "test", for_hours=1.0)
    clock.advance(COOLDOWN_S + 1)
    with pytest.raises(GuardInternalError):
        guard.fetch_ticker(SYMBOL)
    assert guard.fetch_ticker(SYMBOL)["last"] == 100.0  # probed again, and unfrozen
    assert not guard.freeze_manager.is_frozen(SYMBOL)


def test_fetch_tickers_keeps_duplicate_symbols_as_asked() -> None:
    exchange = Exchange()
    guard = GuardedBroker(exchange, GuardConfig.load(env={}), store=MemoryStore(), profile="ccxt")
    guard.fetch_tickers([SYMBOL, SYMBOL])
    assert exchange.calls == [f"tickers {[SYMBOL, SYMBOL]}"]


class ReorderedBroker:
    """A bot's own broker whose methods name their parameters their own way."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def get_current_price(self, pair: str) -> float:
        return 1.0

    def place_order(self, side: str, pair: str, qty: float) -> str:
        self.sent.append((side, pair, qty))
        return "ok"

    def submit_order(self, order: Any) -> str:
        self.sent.append((order,))
        return "ok"

    def buy(self, quantity: float, ticker: str) -> str:
        self.sent.append(("buy", ticker, quantity))
        return "ok"


@dataclass
class VendorOrder:
    symbol: str
    side: str
    qty: float


def test_an_order_method_naming_its_symbol_another_way_is_judged_on_the_right_symbol() -> None:
    """``place_order("buy", "BTC-USD", 1)`` was read at position 0: the symbol ``BUY``."""
    broker = ReorderedBroker()
    guard = GuardedBroker(broker, store=MemoryStore())
    guard.freeze_manager.freeze("BTC-USD", "review")
    with pytest.raises(SymbolFrozenError):
        guard.place_order("buy", "BTC-USD", 1)
    with pytest.raises(SymbolFrozenError):
        guard.place_order(side="buy", pair="BTC-USD", qty=1)
    with pytest.raises(SymbolFrozenError):
        guard.buy(1, "BTC-USD")
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("BTC-USD")
    assert broker.sent == []
    guard.place_order("sell", "BTC-USD", 1)  # spot, no holding to read: a sell cannot open
    guard.place_order("buy", "ETH-USD", 1)
    assert broker.sent == [("sell", "BTC-USD", 1), ("buy", "ETH-USD", 1)]


def test_an_order_object_is_judged_by_the_symbol_and_side_it_carries() -> None:
    broker = ReorderedBroker()
    guard = GuardedBroker(broker, store=MemoryStore())
    guard.freeze_manager.freeze("BTC-USD", "review")
    with pytest.raises(SymbolFrozenError):
        guard.submit_order(VendorOrder("BTC-USD", "buy", 1))
    with pytest.raises(SymbolFrozenError):
        guard.submit_order({"symbol": "BTC-USD", "side": "buy", "qty": 1})
    assert broker.sent == []
    guard.submit_order(VendorOrder("ETH-USD", "buy", 1))
    assert len(broker.sent) == 1


class BatchBroker:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def create_orders(self, orders: list[Any]) -> list[str]:
        self.sent.extend(orders)
        return ["ok"] * len(orders)


@pytest.mark.parametrize("halted", [False, True])
def test_a_batch_entry_that_is_not_a_mapping_is_judged_by_what_it_carries(halted: bool) -> None:
    broker = BatchBroker()
    profile = Profile.custom({"create_orders": MethodSpec("order", batch="orders")})
    guard = GuardedBroker(broker, store=MemoryStore(), profile=profile)
    guard.freeze_manager.freeze("BTC/USDT", "review")
    if halted:
        guard.halt("incident")
    refused = TradingHaltedError if halted else SymbolFrozenError
    with pytest.raises(refused):
        guard.create_orders([VendorOrder("ETH/USDT", "buy", 1), VendorOrder("BTC/USDT", "buy", 1)])
    # an entry that says nothing the guard can read meets what refuses every symbol
    if halted:
        with pytest.raises(TradingHaltedError):
            guard.create_orders([("ETH/USDT", "buy")])
    assert broker.sent == []


class FlagBroker:
    """``market`` and ``instrument`` here are flags, not the symbol."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def get_price(self, coin: str, market: str = "spot") -> float:
        return 1.0

    def place_order(
        self, coin: str, side: str, qty: float, price: Any = None, instrument: Any = None
    ) -> str:
        self.sent.append((coin, side, qty))
        return "ok"


def test_an_optional_parameter_named_like_a_symbol_is_not_taken_for_it() -> None:
    broker = FlagBroker()
    guard = GuardedBroker(broker, store=MemoryStore())
    guard.freeze_manager.freeze("BTC-USD", "review")
    with pytest.raises(SymbolFrozenError):
        guard.place_order("BTC-USD", "buy", 1)
    with pytest.raises(SymbolFrozenError):
        guard.get_price("BTC-USD")
    assert broker.sent == []


@dataclass
class NotionalOrder:
    symbol: str
    side: str
    notional: float

    @property
    def quantity(self) -> float:
        raise ValueError("quantity unknown for a notional order")


def test_an_order_object_whose_field_raises_is_still_judged_and_exits_pass() -> None:
    broker = ReorderedBroker()
    guard = GuardedBroker(broker, store=MemoryStore())
    assert guard.submit_order(NotionalOrder("ETH-USD", "sell", 100)) == "ok"
    guard.freeze_manager.freeze("BTC-USD", "review")
    with pytest.raises(SymbolFrozenError):
        guard.submit_order(NotionalOrder("BTC-USD", "buy", 100))
    with pytest.raises(SymbolFrozenError):
        guard.submit_order({"instrument_id": "BTC-USD", "side": "buy", "qty": 1})
    assert guard.submit_order(NotionalOrder("BTC-USD", "sell", 100)) == "ok"  # an exit
