"""The ccxt profile against real ccxt exchange objects (Binance and Kraken, sync and async).

ccxt's own request signing, response parsing and error mapping run: only the
API host is a local server answering with recorded-shape JSON and real error
statuses (``ccxt_server``). No test reaches the internet.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

ccxt = pytest.importorskip("ccxt")
import ccxt.async_support as ccxt_async  # noqa: E402
from ccxt_fixtures import (  # noqa: E402
    BINANCE_BAD_KEY,
    BINANCE_RATE_LIMIT,
    KRAKEN_BAD_KEY,
    binance_server,
    kraken_server,
)
from ccxt_server import ExchangeServer  # noqa: E402

from broker_guard import (  # noqa: E402
    GuardConfig,
    GuardedBroker,
    MemoryStore,
    SymbolFrozenError,
    SymbolRestrictedError,
    TradingHaltedError,
)
from broker_guard.guard.profiles import CCXT  # noqa: E402
from broker_guard.testing import FakeClock  # noqa: E402

API_KEY = "AKIAKEYDONOTLEAK123456"
SECRET = base64.b64encode(b"SECRET-DO-NOT-LEAK-987654").decode()


@dataclass
class Venue:
    """One exchange as the tests see it: its server paths, symbols and error answers."""

    name: str
    ticker: str
    balance: str
    order: str
    usd: str  # the quote the positions are priced in
    auth_error: tuple[int, Any]
    unavailable: tuple[int, Any]
    rate_limited: tuple[int, Any]

    def symbol(self, base: str) -> str:
        return f"{base}/{self.usd}"


BINANCE = Venue(
    "binance",
    "/api/v3/ticker/24hr",
    "/api/v3/account",
    "/api/v3/order",
    "USDT",
    (401, BINANCE_BAD_KEY),
    (503, "Service Unavailable"),
    (429, BINANCE_RATE_LIMIT),
)
KRAKEN = Venue(
    "kraken",
    "/0/public/Ticker",
    "/0/private/BalanceEx",
    "/0/private/AddOrder",
    "USD",
    (200, KRAKEN_BAD_KEY),
    (520, "Service Unavailable"),
    (200, {"error": ["EAPI:Rate limit exceeded"]}),
)


def make_exchange(venue: Venue, is_async: bool) -> tuple[Any, ExchangeServer]:
    module = ccxt_async if is_async else ccxt
    if venue.name == "binance":
        holdings = {
            "USDT": ("100.0", "0"),
            "BTC": ("0.01", "0"),
            "ETH": ("0.003", "0"),
            "DOGE": ("3", "0"),
            "SHIB": ("50000", "0"),
            "OLD": ("5", "0"),
        }
        server = binance_server(holdings)
        options = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}
        exchange = module.binance(
            {"apiKey": API_KEY, "secret": SECRET, "options": options, "enableRateLimit": False}
        )
    else:
        server = kraken_server(
            {"ZUSD": "100.0", "XXBT": "0.01", "XETH": "0.0003", "XXDG": "3", "OLD": "5"}
        )
        # ccxt's own throttle sleeps for real
        exchange = module.kraken({"apiKey": API_KEY, "secret": SECRET, "enableRateLimit": False})
    return server.point(exchange), server


async def maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


Scenario = Callable[[Any, Any, ExchangeServer, Venue, FakeClock], Awaitable[None]]


def run(venue: Venue, is_async: bool, scenario: Scenario, **sections: Any) -> None:
    """Build the exchange, its server and a guard on an injected clock, then run ``scenario`` in one
    event loop."""
    exchange, server = make_exchange(venue, is_async)
    clock = FakeClock()
    config = GuardConfig.load(env={}, **sections)
    guard = GuardedBroker(
        exchange,
        config,
        store=MemoryStore(),
        clock=clock,
        sleep=clock.sleep,
        async_sleep=clock.async_sleep,
    )

    async def body() -> None:
        try:
            await maybe(exchange.load_markets())
            await scenario(exchange, guard, server, venue, clock)
        finally:
            await maybe(exchange.close()) if is_async else None

    try:
        asyncio.run(body())
    finally:
        server.close()


VENUES = pytest.mark.parametrize("venue", [BINANCE, KRAKEN], ids=lambda v: v.name)
MODES = pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])


@VENUES
@MODES
def test_ccxt_exchanges_get_the_ccxt_profile_and_prices_pass_through(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        assert guard.guard_context.profile is CCXT and guard.guard_context.is_async is is_async
        ticker = await maybe(guard.fetch_ticker(venue.symbol("BTC")))
        assert ticker["last"] == 50_000.0
        tickers = await maybe(guard.fetch_tickers([venue.symbol("BTC"), venue.symbol("ETH")]))
        assert set(tickers) == {venue.symbol("BTC"), venue.symbol("ETH")}

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_balance_retries_network_errors_then_serves_the_whole_last_known_balance(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        good = await maybe(guard.fetch_balance())
        assert good["total"]["BTC"] == 0.01
        server.fail(venue.balance, *venue.unavailable, times=2)
        before = len(server.calls(venue.balance))
        again = await maybe(guard.fetch_balance())
        # 2 failures, 1 success
        assert again["total"]["BTC"] == 0.01 and len(server.calls(venue.balance)) - before == 3
        assert len(clock.sleeps) == 2 and clock.sleeps[1] >= 0  # backoff waits, injected
        server.fail(venue.balance, *venue.unavailable, times=10)
        served = await maybe(guard.fetch_balance())
        # the whole dict, as last seen
        assert served["total"] == good["total"] and served["free"] == good["free"]

    run(venue, is_async, scenario, balance={"jitter": False})


@VENUES
@MODES
def test_rate_limits_are_retried_with_backoff(venue: Venue, is_async: bool) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        server.fail(venue.balance, *venue.rate_limited, times=1)
        balance = await maybe(guard.fetch_balance())
        assert balance["total"]["BTC"] == 0.01 and clock.sleeps == [1.0]

    run(venue, is_async, scenario, balance={"jitter": False, "base_delay": 1.0})


@VENUES
@MODES
def test_authentication_errors_are_not_retried_nor_hidden_by_a_fallback(
    venue: Venue, is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        server.fail(venue.balance, *venue.auth_error, times=5)
        with pytest.raises(ccxt.AuthenticationError):
            await maybe(guard.fetch_balance())
        assert len(server.calls(venue.balance)) == 1 and clock.sleeps == []

    with caplog.at_level(logging.DEBUG):
        run(venue, is_async, scenario)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("broker_guard"))
    # ccxt's own DEBUG lines are its business
    assert "not retried" in ours and API_KEY not in ours and SECRET not in ours


@VENUES
@MODES
def test_a_delisted_symbol_freezes_after_the_threshold_and_is_then_refused_without_a_request(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        old = venue.symbol("OLD")
        for _ in range(3):
            with pytest.raises(
                ccxt.ExchangeError
            ):  # ccxt's own BadSymbol (Binance) / ExchangeError (Kraken)
                await maybe(guard.fetch_ticker(old))
        assert guard.freeze_manager.is_frozen(old)
        sent = len(server.calls(venue.ticker))
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.fetch_ticker(old))
        assert len(server.calls(venue.ticker)) == sent  # refused before ccxt saw it
        tickers = await maybe(guard.fetch_tickers([venue.symbol("BTC"), old]))
        # left out of the call, not the whole call failed
        assert list(tickers) == [venue.symbol("BTC")]
        assert "OLD" not in str(server.calls(venue.ticker)[-1].query)

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_network_errors_on_prices_do_not_count_toward_freezing(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        server.fail(venue.ticker, *venue.unavailable, times=5)
        for _ in range(5):
            with pytest.raises(ccxt.NetworkError):
                await maybe(guard.fetch_ticker(venue.symbol("BTC")))
        assert not guard.freeze_manager.is_frozen(venue.symbol("BTC"))

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_entries_on_a_frozen_symbol_are_refused_before_the_exchange_and_exits_pass(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        doge = venue.symbol("DOGE")
        guard.freeze_manager.freeze(doge, "test")
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.create_order(doge, "market", "buy", 100))
        assert server.calls(venue.order) == []
        order = await maybe(guard.create_order(doge, "market", "sell", 3))
        assert order["amount"] == 3.0 and len(server.calls(venue.order)) == 1

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_dust_reads_spot_balances_and_respects_the_exchanges_minimums(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        positions = {p.symbol: p for p in await maybe(guard.valued_positions())}
        assert set(positions) >= {venue.symbol(b) for b in ("BTC", "ETH", "DOGE", "OLD")}
        assert venue.symbol(venue.usd) not in positions  # cash is not a position
        assert positions[venue.symbol("OLD")].usd_value is None  # its ticker fails: value unknown

        dry = await maybe(guard.dust(dry_run=True))
        assert server.calls(venue.order) == [] and dry["dry_run_would_close"] >= 1

        result = await maybe(guard.dust(dry_run=False))
        outcomes = {o.position.symbol: o for o in result.outcomes}
        closed = [s for s, o in outcomes.items() if o.status == "closed"]
        if (
            venue.name == "binance"
        ):  # DOGE $0.45 clears its $0.10 minimum; SHIB $0.50 is under its $1 minimum
            assert closed == ["DOGE/USDT"]
            assert (
                outcomes["SHIB/USDT"].status == "skipped"
                and "minimum" in outcomes["SHIB/USDT"].reason
            )
            assert server.calls(venue.order)[0].form["quantity"] == "3"
        # ETH 0.0003 ($0.75) clears Kraken's $0.50 cost minimum; 3 DOGE is under its 50 DOGE order
        # minimum
        else:
            assert closed == ["ETH/USD"]
            assert (
                outcomes["DOGE/USD"].status == "skipped"
                and "minimum" in outcomes["DOGE/USD"].reason
            )
            assert server.calls(venue.order)[0].form["volume"] == "0.0003"
        assert len(server.calls(venue.order)) == 1  # nothing else: not BTC, not OLD (unknown value)
        assert (
            outcomes[venue.symbol("BTC")].status == "kept"
            and outcomes[venue.symbol("OLD")].status != "closed"
        )

    run(venue, is_async, scenario)


@MODES
def test_normalize_closes_under_the_minimum_through_create_order(is_async: bool) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        result = await maybe(guard.normalize(dry_run=False, minimum_position_usd=10.0))
        sent = [(r.form or r.query).get("symbol") for r in server.calls(venue.order)]
        # ETH $7.50 and DOGE $0.45; SHIB under the exchange minimum
        assert sorted(sent) == [
            "DOGEUSDT",
            "ETHUSDT",
        ]
        assert result["account_errors"] == {}

    run(BINANCE, is_async, scenario)


def test_sync_engine_refuses_to_drive_an_async_exchange_without_await() -> None:
    from broker_guard.guard.async_bridge import resolve

    async def coroutine() -> int:
        return 1

    with pytest.raises(TypeError, match="await"):
        resolve(coroutine())


@MODES
def test_the_ccxt_examples_strategy_runs_on_a_guarded_exchange(
    is_async: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "examples" / "guard_a_ccxt_exchange.py"
    spec = importlib.util.spec_from_file_location("guard_a_ccxt_exchange", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        symbols = [venue.symbol("BTC"), venue.symbol("ETH")]
        await example.async_strategy_tick(guard, symbols) if is_async else example.strategy_tick(
            guard, symbols
        )

    run(BINANCE, is_async, scenario)
    out = capsys.readouterr().out
    assert "free cash: 100.0" in out and "BTC/USDT: 50000.0" in out


# -- the trading gate: every order path of the installed ccxt ----------------------------------

ORDER_NAME = re.compile(r"(?i)^(create|edit).*order")  # found here independently of the profile
ARGUMENTS = {
    "side": "buy",
    "type": "limit",
    "amount": 1.0,
    "price": 1.0,
    "cost": 10.0,
    "id": "1",
    "clientOrderId": "c1",
    "duration": 60,
    "params": {},
}


def order_call(method: Any, symbol: str) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for any order method: a buy of ``symbol`` (a list of one for a batch)."""
    args: list[Any] = []
    for name, param in inspect.signature(method).parameters.items():
        if param.kind is not param.POSITIONAL_OR_KEYWORD:
            continue
        if name == "symbol":
            args.append(symbol)
        elif name == "orders":
            args.append([{"symbol": symbol, "type": "limit", "side": "buy", "amount": 1.0}])
        else:
            args.append(ARGUMENTS.get(name, 1.0))  # trigger, stop-loss, trailing prices...
    return args, {}


def order_methods(exchange: Any) -> list[str]:
    return [n for n in dir(exchange) if ORDER_NAME.match(n) and callable(getattr(exchange, n))]


@VENUES
@MODES
def test_every_order_method_of_the_installed_ccxt_is_refused_for_a_frozen_symbol(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        doge = venue.symbol("DOGE")
        guard.freeze_manager.freeze(doge, "test")
        names = order_methods(exchange)
        assert len(names) >= 80  # snake_case and camelCase, create and edit, batch and ws
        sent = len(server.requests)
        reached = []
        for name in names:
            args, kwargs = order_call(getattr(exchange, name), doge)
            try:
                await maybe(getattr(guard, name)(*args, **kwargs))
            except SymbolFrozenError:
                continue
            except Exception:  # ccxt's own answer (not supported, ...): it went past the gate
                pass
            reached.append(name)
        exits = [n for n in reached if re.search(r"(?i)sell|reduce_?only", n)]
        assert sorted(set(reached) - set(exits)) == []  # every buy path refused
        # only exits reached the exchange (a sell on a frozen symbol reads the holding first)
        orders = [r for r in server.requests[sent:] if r.path != venue.balance]
        assert len(orders) <= len(exits)

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_reduce_only_orders_are_exits_in_keywords_and_in_params(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        doge = venue.symbol("DOGE")
        guard.freeze_manager.freeze(doge, "test")
        for params in ({"reduceOnly": True}, {"reduce_only": "true"}):
            try:
                await maybe(guard.create_order(doge, "market", "buy", 3, None, params))
            except SymbolFrozenError:
                pytest.fail(f"an exit with {params} was refused")
            except Exception:
                pass  # the exchange's own answer: the order reached it
        for params in ({"reduceOnly": "false"}, {"reduceOnly": 0}, {"reduceOnly": None}):
            with pytest.raises(SymbolFrozenError):
                await maybe(guard.create_order(doge, "market", "buy", 3, None, params))
        sent = len(server.calls(venue.order))
        exit_order = {"symbol": doge, "type": "market", "side": "sell", "amount": 3.0}
        entry = {**exit_order, "side": "buy"}
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.create_orders([exit_order, entry]))
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.createOrders([exit_order, entry]))
        assert len(server.calls(venue.order)) == sent  # a batch with an entry: nothing sent

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_balance_variants_are_retried_and_served_from_the_last_known(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        for name in ("fetch_free_balance", "fetchTotalBalance", "fetch_used_balance"):
            good = await maybe(getattr(guard, name)())
            server.fail(venue.balance, *venue.unavailable, times=2)
            assert await maybe(getattr(guard, name)()) == good  # retried
            server.fail(venue.balance, *venue.unavailable, times=10)
            assert await maybe(getattr(guard, name)()) == good  # the last known
            server.heal(venue.balance)

    run(venue, is_async, scenario, balance={"jitter": False})


# -- exits judged by what the order does (issue 14, item 2) ------------------------------------


def usdm_run(is_async: bool, positions: dict[str, float], scenario: Any) -> None:
    """A guarded Binance USDⓈ-M futures exchange (real ccxt ``binanceusdm``) answered locally."""
    from ccxt_fixtures import binance_usdm_server

    server = binance_usdm_server(positions)
    module = ccxt_async if is_async else ccxt
    options = {"fetchCurrencies": False}
    exchange = module.binanceusdm(
        {"apiKey": API_KEY, "secret": SECRET, "options": options, "enableRateLimit": False}
    )
    server.point(exchange)
    clock = FakeClock()
    guard = GuardedBroker(
        exchange, GuardConfig.load(env={}), store=MemoryStore(), clock=clock, sleep=clock.sleep
    )

    async def body() -> None:
        try:
            await maybe(exchange.load_markets())
            await scenario(guard, server)
        finally:
            await maybe(exchange.close()) if is_async else None

    try:
        asyncio.run(body())
    finally:
        server.close()


ORDER = "/fapi/v1/order"
BTC_SWAP = "BTC/USDT:USDT"


@MODES
def test_a_sell_that_would_open_a_short_on_a_frozen_swap_is_refused(is_async: bool) -> None:
    """Before: any sell passed as an exit, so a sell on a frozen swap with no long opened a
    short."""
    positions = {"BTC": 0.0, "ETH": 0.5}

    async def scenario(guard: Any, server: ExchangeServer) -> None:
        guard.freeze_manager.freeze(BTC_SWAP, "delisting announced")
        guard.freeze_manager.freeze("ETH/USDT:USDT", "delisting announced")
        with pytest.raises(SymbolFrozenError, match="reduces the position"):
            await maybe(guard.create_order(BTC_SWAP, "market", "sell", 0.01))
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.create_market_sell_order(BTC_SWAP, 0.01))
        with pytest.raises(SymbolFrozenError):  # a sell larger than the long flips it short
            await maybe(guard.create_order("ETH/USDT:USDT", "market", "sell", 0.8))
        with pytest.raises(SymbolFrozenError):  # a buy adds to the long
            await maybe(guard.create_order("ETH/USDT:USDT", "market", "buy", 0.1))
        assert server.calls(ORDER) == []
        await maybe(guard.create_order("ETH/USDT:USDT", "market", "sell", 0.5))  # closes the long
        assert len(server.calls(ORDER)) == 1 and positions["ETH"] == 0.0
        await maybe(
            guard.create_order(BTC_SWAP, "market", "sell", 0.01, None, {"reduceOnly": True})
        )
        assert len(server.calls(ORDER)) == 2

    usdm_run(is_async, positions, scenario)


@MODES
def test_a_buy_that_reduces_a_short_on_a_frozen_swap_is_an_exit(is_async: bool) -> None:
    positions = {"BTC": -0.02}

    async def scenario(guard: Any, server: ExchangeServer) -> None:
        guard.freeze_manager.freeze(BTC_SWAP, "review")
        await maybe(guard.create_order(BTC_SWAP, "market", "buy", 0.01))  # halves the short
        await maybe(guard.createMarketBuyOrder(BTC_SWAP, 0.01))  # closes it
        assert positions["BTC"] == pytest.approx(0.0)
        with pytest.raises(SymbolFrozenError):  # now it would open a long
            await maybe(guard.create_order(BTC_SWAP, "market", "buy", 0.01))
        guard.halt("incident")  # a halt judges the same way
        with pytest.raises(TradingHaltedError):
            await maybe(guard.create_order("ETH/USDT:USDT", "market", "sell", 0.01))
        assert len(server.calls(ORDER)) == 2

    usdm_run(is_async, positions, scenario)


@MODES
def test_a_position_that_cannot_be_read_keeps_a_swap_sell_an_entry(is_async: bool) -> None:
    positions = {"BTC": 0.5}

    async def scenario(guard: Any, server: ExchangeServer) -> None:
        guard.freeze_manager.freeze(BTC_SWAP, "review")
        server.fail("/fapi/v3/positionRisk", 503, "Service Unavailable", times=5)
        server.fail("/fapi/v2/positionRisk", 503, "Service Unavailable", times=5)
        with pytest.raises(SymbolFrozenError, match="could not be read"):
            await maybe(guard.create_order(BTC_SWAP, "market", "sell", 0.1))
        assert server.calls(ORDER) == []
        await maybe(guard.create_order(BTC_SWAP, "market", "sell", 0.1, None, {"reduceOnly": True}))
        assert len(server.calls(ORDER)) == 1

    usdm_run(is_async, positions, scenario)


@VENUES
@MODES
def test_a_spot_sell_of_more_than_is_held_on_a_frozen_symbol_is_refused(
    venue: Venue, is_async: bool
) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        eth = venue.symbol("ETH")  # 0.003 held on binance, 0.0003 on kraken
        guard.freeze_manager.freeze(eth, "review")
        with pytest.raises(SymbolFrozenError, match=r"reports 0\.00"):
            await maybe(guard.create_order(eth, "market", "sell", 5.0))
        assert server.calls(venue.order) == []
        held = 0.003 if venue.name == "binance" else 0.0003
        try:
            await maybe(guard.create_order(eth, "market", "sell", held))
        except SymbolFrozenError:
            pytest.fail("a sell of what is held was refused")
        except Exception:
            pass  # the exchange's own answer (below its minimum): it went past the gate

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_market_data_calls_are_guarded_like_prices(venue: Venue, is_async: bool) -> None:
    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        doge = venue.symbol("DOGE")
        guard.freeze_manager.freeze(doge, "review")
        sent = len(server.requests)
        for name in ("fetch_order_book", "fetchOHLCV", "fetch_trades", "fetchL2OrderBook"):
            with pytest.raises(SymbolFrozenError):
                await maybe(getattr(guard, name)(doge))
        with pytest.raises(SymbolRestrictedError):
            await maybe(guard.fetch_ohlcv("AUT/USD"))
        assert len(server.requests) == sent  # refused before the exchange

    run(venue, is_async, scenario)


@VENUES
@MODES
def test_an_exchange_market_id_meets_the_freeze_of_its_unified_symbol(
    venue: Venue, is_async: bool
) -> None:
    """binance trades ``DOGEUSDT`` as ``DOGE/USDT``: the id must not get round the freeze."""

    async def scenario(
        exchange: Any, guard: Any, server: ExchangeServer, venue: Venue, clock: FakeClock
    ) -> None:
        doge = venue.symbol("DOGE")
        market_id = exchange.market(doge)["id"]
        assert market_id != doge
        guard.freeze_manager.freeze(doge, "review")
        sent = len(server.requests)
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.create_order(market_id, "market", "buy", 100))
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.create_limit_buy_order(market_id, 100, 0.1))
        with pytest.raises(SymbolFrozenError):
            await maybe(guard.fetch_ticker(market_id))
        assert len(server.requests) == sent  # refused before the exchange
        tickers = await maybe(guard.fetch_tickers([market_id, venue.symbol("BTC")]))
        assert list(tickers) == [venue.symbol("BTC")]
        order = await maybe(guard.create_order(market_id, "market", "sell", 3))  # an exit
        assert order["amount"] == 3.0 and len(server.calls(venue.order)) == 1

    run(venue, is_async, scenario)


@MODES
def test_a_market_id_before_markets_are_loaded_is_judged_once_the_guard_loaded_them(
    is_async: bool,
) -> None:
    """The exchange would load its markets inside create_order and may read the id as a frozen
    market: the guard loads them first (the same request), then judges the market the id names.
    With nothing of it frozen the order goes (the shipped restricted list is not a reason)."""
    exchange, server = make_exchange(BINANCE, is_async)
    clock = FakeClock()
    guard = GuardedBroker(exchange, store=MemoryStore(), clock=clock, sleep=clock.sleep)

    async def body() -> None:
        try:
            await maybe(guard.create_order("BTCUSDT", "market", "buy", 0.001))
            assert len(server.calls(BINANCE.order)) == 1
            fresh, fresh_server = make_exchange(BINANCE, is_async)
            try:
                other = GuardedBroker(fresh, store=MemoryStore(), clock=clock, sleep=clock.sleep)
                other.freeze_manager.freeze("DOGE/USDT", "review")
                with pytest.raises(SymbolFrozenError):
                    await maybe(other.create_order("DOGEUSDT", "market", "buy", 100))
                assert fresh_server.calls(BINANCE.order) == []
            finally:
                await maybe(fresh.close()) if is_async else None
                fresh_server.close()
        finally:
            await maybe(exchange.close()) if is_async else None

    try:
        asyncio.run(body())
    finally:
        server.close()


def _binance_market(kind: str, symbol: str, settle: str | None = None) -> dict[str, Any]:
    swap = kind == "swap"
    return {
        "id": "BTCUSDT",
        "symbol": symbol,
        "base": "BTC",
        "quote": "USDT",
        "settle": settle,
        "type": kind,
        "spot": not swap,
        "swap": swap,
        "future": False,
        "option": False,
        "margin": False,
        "contract": swap,
        "linear": True if swap else None,
        "inverse": False if swap else None,
        "contractSize": 1 if swap else None,
        "active": True,
        "precision": {"amount": 0.001, "price": 0.01},
        "limits": {"amount": {}, "price": {}, "cost": {}},
        "info": {"orderTypes": ["LIMIT"]},
    }


def test_a_plain_symbol_is_judged_as_the_market_the_exchanges_default_type_trades() -> None:
    """binance with defaultType swap trades ``BTC/USDT`` as ``BTC/USDT:USDT``."""
    exchange = ccxt.binance(
        {"apiKey": API_KEY, "secret": SECRET, "options": {"defaultType": "swap"}}
    )
    exchange.set_markets(
        [_binance_market("spot", "BTC/USDT"), _binance_market("swap", "BTC/USDT:USDT", "USDT")]
    )
    sent: list[str] = []

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        sent.append(f"{method} {url}")
        raise ccxt.ExchangeNotAvailable("no network in tests")

    exchange.fetch = fetch
    guard = GuardedBroker(exchange, store=MemoryStore())
    assert exchange.market("BTC/USDT")["symbol"] == "BTC/USDT:USDT"
    guard.freeze_manager.freeze("BTC/USDT:USDT", "review")
    with pytest.raises(SymbolFrozenError):
        guard.create_order("BTC/USDT", "limit", "buy", 1, 100)
    with pytest.raises(SymbolFrozenError):
        guard.fetch_ticker("BTC/USDT")
    assert not [r for r in sent if r.startswith("POST")]  # only the position was read
