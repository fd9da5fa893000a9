"""How a broker tells what an order does to exposure: the market's kind and the holding.

``core.gate`` decides from facts; this module finds them on a broker. It is
asked only when the verdict depends on it (a sell or a derivatives buy on a
symbol the guard would refuse), so the success path never reads a position.
A read is returned as a ``HoldingRead`` (a call and a parser) for the order
driver to call, or await on an async broker.

ccxt: the market type from ``exchange.markets`` (``swap``, ``future``,
``option``, ``margin``), a ``:SETTLE`` suffix, a ``marginMode`` or a
derivatives ``type`` in ``params``, or the exchange's ``defaultType``; a spot
holding from ``fetch_balance()['total']``, a derivatives position from
``fetch_positions([symbol])`` (long positive, short negative, filtered by the
hedge-mode side when ``params`` names one). Other brokers: the profile's
positions method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker_guard.core.validate import real_number
from broker_guard.symbols import base_asset, canonical_symbol

Params = Mapping[str, Any] | None
SYMBOL_KEYS = ("symbol", "product_id", "instrument", "instrument_id", "pair", "ticker")
ASSET_KEYS = ("currency", "asset", "base", "base_currency", "coin")
QUANTITY_KEYS = ("quantity", "qty", "amount", "size", "balance", "total", "contracts")
SIDE_KEYS = ("side", "position_side", "positionSide", "posSide", "direction")
DERIVATIVE_TYPES = frozenset({"swap", "future", "futures", "delivery", "option", "margin"})
MARGIN_PARAMS = ("marginMode", "margin_mode", "tdMode", "leverage")


@dataclass(frozen=True)
class HoldingRead:
    """One call that reads what is held of a symbol, and how to read its answer (signed: a long
    above zero, a short below; None when the answer cannot be read)."""

    call: Callable[[], Any]  # an awaitable comes back from an async broker
    parse: Callable[[Any], float | None]
    what: str  # the call, for messages


def field(entry: Any, keys: Iterable[str]) -> Any:
    """The first of ``keys`` an entry (a mapping or an object) has a value for."""
    for key in keys:
        value = entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)
        if value is not None:
            return value
    return None


# -- ccxt -------------------------------------------------------------------------------------


def ccxt_derivative(exchange: Any, symbol: str, params: Params) -> bool:
    """Whether an order on ``symbol`` trades margin or derivatives on this ccxt exchange."""
    if isinstance(params, Mapping):
        if any(params.get(k) not in (None, "", "cash") for k in MARGIN_PARAMS):
            return True
        if str(params.get("type", "")).lower() in DERIVATIVE_TYPES or params.get("margin"):
            return True
    markets = getattr(exchange, "markets", None)
    market = markets.get(symbol) if isinstance(markets, Mapping) else None
    if isinstance(market, Mapping) and market.get("type"):
        return market.get("type") != "spot" or bool(market.get("contract"))
    if ":" in symbol:
        return True  # a unified derivatives symbol names its settle currency
    return ccxt_default_type(exchange) in DERIVATIVE_TYPES


def ccxt_default_type(exchange: Any) -> str:
    """The market type a ccxt exchange trades a symbol in when the symbol does not say (its
    ``defaultType`` option, lower case; ``spot`` when unset)."""
    options = getattr(exchange, "options", None)
    default = options.get("defaultType") if isinstance(options, Mapping) else None
    return str(default or "spot").lower()


def ccxt_holding(exchange: Any, symbol: str, derivative: bool, params: Params) -> HoldingRead:
    if not derivative:
        asset = _ccxt_base(exchange, symbol)

        def spot(answer: Any) -> float | None:
            total = answer.get("total") if isinstance(answer, Mapping) else None
            if not isinstance(total, Mapping):
                return None
            return real_number(total.get(asset, 0) or 0)

        return HoldingRead(lambda: exchange.fetch_balance(), spot, "fetch_balance()")
    side = _hedge_side(params)
    has = getattr(exchange, "has", None)
    if isinstance(has, Mapping) and not has.get("fetchPositions") and has.get("fetchPosition"):
        return HoldingRead(
            lambda: exchange.fetch_position(symbol),
            lambda answer: signed_positions([answer], symbol, side),
            f"fetch_position({symbol!r})",
        )
    return HoldingRead(
        lambda: exchange.fetch_positions([symbol]),
        lambda answer: signed_positions(answer, symbol, side),
        f"fetch_positions([{symbol!r}])",
    )


def _ccxt_base(exchange: Any, symbol: str) -> str:
    markets = getattr(exchange, "markets", None)
    market = markets.get(symbol) if isinstance(markets, Mapping) else None
    base = market.get("base") if isinstance(market, Mapping) else None
    return base if isinstance(base, str) and base else symbol.split("/", 1)[0].upper()


def _hedge_side(params: Params) -> str | None:
    """The position side a hedge-mode order names (Binance ``positionSide``, OKX ``posSide``)."""
    if not isinstance(params, Mapping):
        return None
    for key in ("positionSide", "posSide", "position_side"):
        value = params.get(key)
        if isinstance(value, str) and value.lower() in ("long", "short"):
            return value.lower()
    return None


# -- any broker's positions -------------------------------------------------------------------


def positions_holding(method: Callable[[], Any], symbol: str, name: str) -> HoldingRead:
    """Read the holding of ``symbol`` from a positions method returning a list of entries or a
    mapping (symbol or asset to an entry or a quantity)."""
    return HoldingRead(method, lambda answer: signed_positions(answer, symbol, None), f"{name}()")


def signed_positions(answer: Any, symbol: str, side: str | None) -> float | None:
    """The signed quantity of ``symbol`` in a positions answer: 0.0 when it holds none, None when
    an entry for it cannot be read (a quantity or a side that is not clear)."""
    canon = canonical_symbol(symbol)
    asset = base_asset(symbol)
    if isinstance(answer, Mapping) and field(answer, SYMBOL_KEYS) is None:
        answer = [
            {"symbol": key, **entry}
            if isinstance(entry, Mapping)
            else {"symbol": key, "quantity": entry}
            for key, entry in answer.items()
        ]
    if not isinstance(answer, (list, tuple)):
        return None
    total = 0.0
    for entry in answer:
        named = field(entry, SYMBOL_KEYS)
        if isinstance(named, str) and named.strip():
            if canonical_symbol(named) != canon and named.upper() != asset:
                continue
        elif str(field(entry, ASSET_KEYS) or "").upper() != asset:
            continue
        signed = _signed(entry)
        if signed is None:
            return None
        if side is None or (signed > 0) == (side == "long") or signed == 0:
            total += signed
    return total


def _signed(entry: Any) -> float | None:
    quantity = real_number(field(entry, QUANTITY_KEYS))
    if quantity is None:
        return None
    side = str(field(entry, SIDE_KEYS) or "").lower()
    if side in ("short", "sell"):
        return -abs(quantity)
    if side in ("long", "buy"):
        return abs(quantity)
    if side in ("", "both", "net"):
        return quantity  # one-way mode: the sign says which way
    return None  # a side this reader does not know: not clear which way it points
