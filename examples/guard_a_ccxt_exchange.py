"""Guard a ccxt exchange: the strategy keeps calling fetch_balance, fetch_ticker and create_order.

Run:  python examples/guard_a_ccxt_exchange.py
      EXCHANGE=kraken BROKER_GUARD_API_KEY=... BROKER_GUARD_API_SECRET=... python
      examples/guard_a_ccxt_exchange.py

With keys set (and ``pip install 'broker-guard[ccxt]'``) it wraps the real
exchange and only reads: balance, tickers, the dust it would close (dry run).
Without keys it runs the same strategy on the built-in paper broker, so it
works on a fresh machine with no account and no network.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from broker_guard import GuardConfig, GuardedBroker
from broker_guard.testing import PaperBroker


def strategy_tick(exchange: Any, symbols: list[str]) -> None:
    """Strategy code written against ccxt: unchanged whether ``exchange`` is guarded or not."""
    balance = exchange.fetch_balance()
    print(f"   free cash: {balance['free'].get('USDT', balance['free'].get('USD', 0))}")
    for symbol, ticker in exchange.fetch_tickers(
        symbols
    ).items():  # a frozen symbol is left out, not the call failed
        print(f"   {symbol}: {ticker['last']}")


async def async_strategy_tick(exchange: Any, symbols: list[str]) -> None:
    balance = await exchange.fetch_balance()
    print(f"   free cash: {balance['free'].get('USDT', balance['free'].get('USD', 0))}")
    for symbol, ticker in (await exchange.fetch_tickers(symbols)).items():
        print(f"   {symbol}: {ticker['last']}")
    # async exchanges: the guard's own calls are awaited too
    dust = await exchange.dust(dry_run=True)
    print(f"   dust it would close: {dust['dry_run_would_close']}")


def with_ccxt(exchange_id: str) -> None:
    import ccxt
    import ccxt.async_support as ccxt_async

    keys = {
        "apiKey": os.environ["BROKER_GUARD_API_KEY"],
        "secret": os.environ["BROKER_GUARD_API_SECRET"],
    }
    config = GuardConfig.load()  # config file and BROKER_GUARD_* / seed environment variables
    symbols = os.environ.get("SYMBOLS", "BTC/USDT,ETH/USDT").split(",")

    guarded = GuardedBroker(getattr(ccxt, exchange_id)(keys), config)
    print(f"\n{exchange_id} (sync), guarded:")
    strategy_tick(guarded, symbols)
    result = guarded.dust(dry_run=True)  # never sells in this example
    print(
        f"   dust it would close: {result['dry_run_would_close']}, health: "
        f"{guarded.health()['alerts'] or 'ok'}"
    )

    async def run_async() -> None:
        exchange = getattr(ccxt_async, exchange_id)(keys)
        try:
            print(f"\n{exchange_id} (async), guarded:")
            await async_strategy_tick(GuardedBroker(exchange, config), symbols)
        finally:
            await exchange.close()

    asyncio.run(run_async())


def without_keys() -> None:
    print(
        "No BROKER_GUARD_API_KEY/SECRET set: the same guard on the paper broker (no account, no "
        "network)."
    )
    import tempfile

    broker = PaperBroker(
        prices={"BTC-USD": 50_000.0, "ETH-USD": 2_500.0, "DOGE-USD": 0.15},
        positions={"DOGE-USD": 4.0},
        cash=1_000.0,
    )
    guarded = GuardedBroker(
        broker, GuardConfig.load(env={}, data_dir=tempfile.mkdtemp(prefix="broker-guard-example-"))
    )
    print(f"   balance: {guarded.get_account_balance():.2f}")
    for symbol in ("BTC-USD", "ETH-USD"):
        print(f"   {symbol}: {guarded.get_current_price(symbol)}")
    print(f"   dust it would close: {guarded.dust(dry_run=True)['dry_run_would_close']}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if os.environ.get("BROKER_GUARD_API_KEY") and os.environ.get("BROKER_GUARD_API_SECRET"):
        with_ccxt(os.environ.get("EXCHANGE", "binance"))
    else:
        without_keys()


if __name__ == "__main__":
    main()
