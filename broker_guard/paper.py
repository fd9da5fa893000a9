"""PaperBroker: an in-memory broker with the seed-style API and deterministic fault injection.

It is the embedded default for the demo, the examples, the tests and the
benchmarks: cash, prices and positions in memory; market orders with a
minimum trade size that ``force_liquidate`` bypasses; and faults on demand
(fail the next N calls, a failure rate from a seeded RNG, latency through an
injected sleeper, delisted symbols, rate limits with a retry-after hint).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from broker_guard.clock import Sleep, system_sleep
from broker_guard.symbols import base_asset, canonical_symbol


class PaperBrokerError(Exception):
    """Base of the paper broker's errors."""


class PaperNetworkError(PaperBrokerError, ConnectionError):
    """A transient connection failure (retried by the guard)."""


class PaperTimeoutError(PaperBrokerError, TimeoutError):
    """A transient timeout (retried by the guard)."""


class PaperRateLimitError(PaperBrokerError):
    """Too many requests; ``retry_after`` seconds is the broker's hint."""

    status_code = 429

    def __init__(
        self, message: str = "rate limit exceeded", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PaperAuthError(PaperBrokerError):
    """Authentication failed: never retried, never answered from a cache."""

    status_code = 401


class PaperSymbolError(PaperBrokerError):
    """Unknown, delisted or suspended symbol: counts toward freezing."""


class PaperOrderError(PaperBrokerError):
    """An order the broker rejects (below the minimum trade size, more than held...)."""


FAULTS: Mapping[str, Callable[[str], BaseException]] = {
    "network": lambda m: PaperNetworkError(f"Network error in {m}"),
    "timeout": lambda m: PaperTimeoutError(f"{m} timed out"),
    "rate_limit": lambda m: PaperRateLimitError(f"rate limit exceeded in {m}", retry_after=1.0),
    "auth": lambda m: PaperAuthError("invalid API key"),
    "symbol": lambda m: PaperSymbolError("Price not available"),
}


class PaperBroker:
    """Seed-style broker in memory. Symbols are ``BASE-USD``; positions are held base quantities."""

    def __init__(
        self,
        *,
        cash: float = 1000.0,
        prices: Mapping[str, float] | None = None,
        positions: Mapping[str, float] | None = None,
        min_trade_usd: float = 1.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        latency: float = 0.0,
        sleep: Sleep = system_sleep,
        account_id: str = "paper",
    ) -> None:
        self.account_id = account_id
        self.cash = float(cash)
        self.prices: dict[str, float] = {
            canonical_symbol(s): float(p) for s, p in (prices or {}).items()
        }
        self.holdings: dict[str, float] = {
            base_asset(s): float(q) for s, q in (positions or {}).items()
        }
        self.min_trade_usd = min_trade_usd
        self.failure_rate = failure_rate
        self.latency = latency
        self.orders: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}
        self.delisted: set[str] = set()
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._scheduled: dict[str, list[BaseException]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(
        self, method: str, count: int = 1, error: str | BaseException = "network"
    ) -> None:
        """The next ``count`` calls of ``method`` raise ``error`` (a FAULTS name or an
        exception)."""
        if not hasattr(self, method):
            raise ValueError(f"PaperBroker has no method {method!r}")
        with self._lock:
            for _ in range(count):
                self._scheduled.setdefault(method, []).append(
                    FAULTS[error](method) if isinstance(error, str) else error
                )

    def delist(self, symbol: str) -> None:
        """Every later price call for ``symbol`` fails, like a delisted coin (AUT-USD)."""
        self.delisted.add(canonical_symbol(symbol))

    def relist(self, symbol: str) -> None:
        self.delisted.discard(canonical_symbol(symbol))

    def set_price(self, symbol: str, price: float) -> None:
        self.prices[canonical_symbol(symbol)] = price

    def _enter(self, method: str) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            scheduled = self._scheduled.get(method)
            error = scheduled.pop(0) if scheduled else None
            if error is None and self.failure_rate and self._rng.random() < self.failure_rate:
                error = FAULTS["network"](method)
        if self.latency:
            self._sleep(self.latency)
        if error is not None:
            raise error

    # -- the broker API ------------------------------------------------------------------------

    def get_account_balance(self) -> float:
        self._enter("get_account_balance")
        return self.cash

    def get_current_price(self, symbol: str) -> float:
        self._enter("get_current_price")
        canon = canonical_symbol(symbol)
        if canon in self.delisted:
            raise PaperSymbolError(f"Price not available for {symbol}")
        try:
            return self.prices[canon]
        except KeyError:
            raise PaperSymbolError(f"unknown symbol {symbol}") from None

    def get_positions(self) -> list[dict[str, Any]]:
        self._enter("get_positions")
        with self._lock:
            return [
                {"symbol": f"{asset}-USD", "quantity": qty, "currency": asset}
                for asset, qty in self.holdings.items()
                if qty != 0
            ]

    def get_position(self, symbol: str) -> dict[str, Any] | None:
        """One holding, or None: lets a liquidation re-read a quantity without listing
        everything."""
        self._enter("get_position")
        asset = base_asset(symbol)
        with self._lock:
            qty = self.holdings.get(asset)
        return None if not qty else {"symbol": f"{asset}-USD", "quantity": qty, "currency": asset}

    def place_market_order(
        self,
        symbol: str,
        side: str,
        quantity: float,
        force_liquidate: bool = False,
        ignore_min_trade: bool = False,
    ) -> dict[str, Any]:
        self._enter("place_market_order")
        canon = canonical_symbol(symbol)
        side = side.lower()
        if side not in ("buy", "sell"):
            raise PaperOrderError(f"side must be buy or sell, got {side!r}")
        if not quantity > 0:
            raise PaperOrderError(f"quantity must be positive, got {quantity!r}")
        if canon in self.delisted or canon not in self.prices:
            raise PaperSymbolError(f"cannot trade {symbol}: market not available")
        price = self.prices[canon]
        notional = price * quantity
        if notional < self.min_trade_usd and not (force_liquidate or ignore_min_trade):
            raise PaperOrderError(
                f"order value ${notional:.4f} below minimum trade size ${self.min_trade_usd:.2f}"
            )
        asset = base_asset(symbol)
        with self._lock:
            held = self.holdings.get(asset, 0.0)
            if side == "sell" and quantity > held * (1 + 1e-9):
                raise PaperOrderError(f"cannot sell {quantity} {asset}: only {held} held")
            if side == "buy" and notional > self.cash:
                raise PaperOrderError(f"insufficient funds: ${self.cash:.2f} for ${notional:.2f}")
            signed = quantity if side == "buy" else -min(quantity, held)
            self.holdings[asset] = held + signed
            if abs(self.holdings[asset]) < 1e-12:
                del self.holdings[asset]
            self.cash -= signed * price
            order = {
                "id": f"paper-{next(self._ids)}",
                "symbol": symbol,
                "side": side,
                "quantity": quantity,
                "price": price,
                "status": "filled",
                "force_liquidate": force_liquidate,
            }
            self.orders.append(order)
            return dict(order)

    def close_position(self, symbol: str, quantity: float | None = None) -> dict[str, Any]:
        """Sell the whole holding (or ``quantity``), bypassing the minimum trade size."""
        held = self.holdings.get(base_asset(symbol), 0.0)
        return self.place_market_order(
            symbol, "sell", held if quantity is None else quantity, force_liquidate=True
        )
