"""What the ccxt profile needs beyond method names: spot positions from balances, and orders the
exchange accepts.

ccxt is an optional extra; nothing here imports it. Spot exchanges have no
positions call, so holdings come from ``fetch_balance()['total']``, each
priced on its USD-like market. A close is sized with the exchange's own
``amount_to_precision`` and checked against the market's amount and cost
minimums before any order is sent: an exchange refuses dust below them, and
broker_guard reports it instead of sending an order that must fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from broker_guard.liquidation.positions import Position, number
from broker_guard.redact import redact

# the order USD-like markets are tried in when pricing a spot holding
PREFERRED_QUOTES = ("USD", "USDT", "USDC", "FDUSD", "BUSD", "DAI", "TUSD", "USDP")


def is_spot(exchange: Any) -> bool:
    """True unless the exchange object is set to trade derivatives by default."""
    options = getattr(exchange, "options", None)
    default = options.get("defaultType", "spot") if isinstance(options, Mapping) else "spot"
    return default in (None, "spot")


def spot_positions(
    exchange: Any, balance: Mapping[str, Any], account: str, quote_assets: Iterable[str]
) -> list[Position]:
    """One position per non-zero, non-cash asset of a ccxt balance, on its first active USD-like
    market."""
    quotes = {q.upper() for q in quote_assets}
    totals = balance.get("total")
    used_raw = balance.get("used")
    used: Mapping[str, Any] = used_raw if isinstance(used_raw, Mapping) else {}
    markets = getattr(exchange, "markets", None) or {}
    out = []
    for asset, amount in totals.items() if isinstance(totals, Mapping) else ():
        quantity = number(amount)
        if quantity is None or quantity == 0 or str(asset).upper() in quotes:
            continue
        symbol = next((f"{asset}/{q}" for q in PREFERRED_QUOTES if f"{asset}/{q}" in markets), None)
        if symbol is None:
            out.append(
                Position(
                    account,
                    f"{asset}/USD",
                    str(asset),
                    quantity,
                    source="balance",
                    problem="no USD market: value unknown",
                )
            )
            continue
        problem = None
        if markets[symbol].get("active") is False:
            problem = f"market {symbol} is inactive on the exchange"
        elif quantity < 0:
            problem = "negative balance: review by hand"
        elif (number(used.get(asset)) or 0.0) > 0:
            problem = f"{used.get(asset)} {asset} held by open orders: review by hand"
        out.append(
            Position(account, symbol, str(asset), quantity, source="balance", problem=problem)
        )
    return out


def derivative_positions(raw: Iterable[Any], account: str) -> list[Position]:
    """ccxt ``fetch_positions``: read and valued for reports, never closed (contracts need
    reduce-only orders by hand)."""
    out = []
    for entry in raw or ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("symbol"), str):
            out.append(
                Position(
                    account,
                    "",
                    "?",
                    None,
                    problem=f"malformed position: {redact(repr(entry))[:80]}",
                )
            )
            continue
        contracts = number(entry.get("contracts"))
        size = number(entry.get("contractSize")) or 1.0
        quantity = (
            None
            if contracts is None
            else contracts * size * (-1 if entry.get("side") == "short" else 1)
        )
        if not quantity:
            continue
        notional = number(entry.get("notional"))
        out.append(
            Position(
                account,
                entry["symbol"],
                str(entry["symbol"]).split("/", 1)[0],
                quantity,
                reported_value=abs(notional) if notional is not None else None,
                source="positions",
                problem="derivative position: broker_guard reports it but does not close contracts",
            )
        )
    return out


def close_amount(
    exchange: Any, symbol: str, quantity: float, price: float
) -> tuple[float | None, str | None]:
    """(amount to sell, None), or (None, why the exchange would refuse it) from its precision and
    minimums."""
    try:
        market = exchange.market(symbol)
        amount = float(exchange.amount_to_precision(symbol, quantity))
    # ccxt raises InvalidOrder below the amount precision, BadSymbol for no market
    except Exception as exc:
        return None, f"below the exchange's precision or no market: {redact(exc)[:120]}"
    limits = market.get("limits") or {}
    min_amount = number((limits.get("amount") or {}).get("min"))
    min_cost = number((limits.get("cost") or {}).get("min"))
    if not (amount > 0 and math.isfinite(amount)):
        return None, f"below the exchange's precision: {quantity} rounds to {amount}"
    if min_amount and amount < min_amount:
        return None, f"below the exchange minimum: amount {amount} < {min_amount}"
    if min_cost and amount * price < min_cost:
        return None, f"below the exchange minimum: cost ${amount * price:.4f} < ${min_cost}"
    return amount, None
