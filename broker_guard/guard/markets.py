"""Which market a call is for, as the broker itself reads the symbol it was given.

A ccxt exchange takes its own market ids as well as unified symbols: binance
trades ``create_order("BTCUSDT", ...)`` as ``BTC/USDT``. Judged by the text
alone, that id would get round a freeze of ``BTC/USDT``; the guard asks the
exchange's ``market()`` instead, the same lookup ccxt's order and price
methods make (a shared id goes to the market of the exchange's
``defaultType``, as it does in ccxt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# the market symbol a broker reads ``symbol`` as (None: it cannot tell yet), and whether that
# reading lasts (may be remembered)
SymbolLookup = Callable[[Any, str], "tuple[str | None, bool]"]
_CACHE_LIMIT = 100_000


def ccxt_market_symbol(exchange: Any, symbol: str) -> tuple[str | None, bool]:
    """ccxt's unified symbol for ``symbol`` (itself, or the market a market id names). While the
    exchange's markets are not loaded only a unified symbol (it always has a ``/``) is taken as
    itself; anything else is None, since the exchange will load them and may read it as any
    market. A unified symbol of the loaded markets is itself for good; an id is read each time
    (which market it names follows the exchange's ``defaultType``)."""
    markets = getattr(exchange, "markets", None)
    if not isinstance(markets, Mapping) or not markets:
        return (symbol if "/" in symbol else None), False
    if symbol in markets:
        return symbol, True
    try:
        market = exchange.market(symbol)
    except Exception:  # ccxt BadSymbol and kin: not a market; the exchange refuses it too
        return symbol, False
    found = market.get("symbol") if isinstance(market, Mapping) else None
    return (found if isinstance(found, str) and found else symbol), False


class MarketNames:
    """Reads each symbol a call names as the broker will (``lookup``); a symbol the broker reads
    as itself is remembered, so the hot path costs one dict lookup."""

    __slots__ = ("broker", "lookup", "same")

    def __init__(self, broker: Any, lookup: SymbolLookup) -> None:
        self.broker = broker
        self.lookup = lookup
        self.same: dict[str, str] = {}

    def name(self, symbol: str) -> str:
        """The market ``symbol`` trades on; the symbol itself when the broker cannot tell yet."""
        same = self.same.get(symbol)
        if same is not None:
            return same
        return self.confirmed(symbol) or symbol

    def confirmed(self, symbol: str) -> str | None:
        """The market ``symbol`` trades on, or None when the broker cannot tell yet."""
        found, lasting = self.lookup(self.broker, symbol)
        if lasting and found == symbol and len(self.same) < _CACHE_LIMIT:
            self.same[symbol] = symbol
        return found
