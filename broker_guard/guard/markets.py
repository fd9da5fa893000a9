"""Which market a call is for, as the broker itself reads the symbol it was given.

A ccxt exchange takes its own market ids as well as unified symbols, and reads
a symbol through its ``defaultType``: binance trades ``create_order("BTCUSDT",
...)`` as ``BTC/USDT``, and with ``defaultType: swap`` even ``BTC/USDT`` as
``BTC/USDT:USDT``. Judged by the text alone, either would get round a freeze
of the market really traded; the guard asks the exchange's own ``market()``
on every call instead, the same lookup ccxt's order and price methods make
(no cache: which market a spelling names follows the exchange's options).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from broker_guard.guard.exposure import ccxt_default_type

# the market symbol a broker reads ``symbol`` as; None when it cannot tell yet
SymbolLookup = Callable[[Any, str], "str | None"]


def ccxt_market_symbol(exchange: Any, symbol: str) -> str | None:
    """ccxt's unified symbol for the market ``symbol`` names on ``exchange``. Before its markets
    are loaded only what cannot be read otherwise is taken as itself (a contract ``BASE/QUOTE:
    SETTLE``, or ``BASE/QUOTE`` on a spot exchange); anything else is None: the exchange will
    load its markets and may read it as any market."""
    markets = getattr(exchange, "markets", None)
    if not isinstance(markets, Mapping) or not markets:
        if "/" in symbol and (":" in symbol or ccxt_default_type(exchange) == "spot"):
            return symbol
        return None
    try:
        market = exchange.market(symbol)
    except Exception:  # ccxt BadSymbol and kin: not a market; the exchange refuses it too
        return symbol
    found = market.get("symbol") if isinstance(market, Mapping) else None
    return found if isinstance(found, str) and found else symbol


def ccxt_load_markets(exchange: Any) -> Any:
    """What the exchange would do itself before its first order (an awaitable when async)."""
    return exchange.load_markets()


class MarketsUnknown(Exception):
    """Internal: an order names a market the broker cannot tell yet; the driver loads the markets
    (``load``, awaited when async) and judges the order again."""

    def __init__(self, load: Callable[[], Any]) -> None:
        super().__init__("markets not loaded")
        self.load = load


class MarketNames:
    """Reads each symbol a call names as the broker will (``lookup``); ``load`` makes the broker
    able to tell (ccxt: load its markets)."""

    __slots__ = ("broker", "load", "lookup")

    def __init__(
        self, broker: Any, lookup: SymbolLookup, load: Callable[[Any], Any] | None = None
    ) -> None:
        self.broker = broker
        self.lookup = lookup
        self.load = load

    def name(self, symbol: str) -> str:
        """The market ``symbol`` trades on; the symbol itself when the broker cannot tell yet."""
        return self.lookup(self.broker, symbol) or symbol

    def confirmed(self, symbol: str) -> str | None:
        """The market ``symbol`` trades on, or None when the broker cannot tell yet."""
        return self.lookup(self.broker, symbol)

    def loader(self) -> Callable[[], Any] | None:
        load, broker = self.load, self.broker
        return None if load is None else lambda: load(broker)
