"""Positions read through the profile and normalised to one small record, then valued through the guard.

Lots of the same symbol are added up before any threshold is applied, and a
position whose value cannot be trusted (no price, frozen, restricted, invalid
price, or a computed value far from the broker's own) is marked unknown, so
it is reported and never liquidated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from broker_guard._async_bridge import resolve
from broker_guard.errors import BrokerGuardError
from broker_guard.events import GuardEvent, emit
from broker_guard.profiles import is_ccxt
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact
from broker_guard.symbols import base_asset, canonical_symbol, quote_asset

if TYPE_CHECKING:
    from broker_guard.proxy import GuardedBroker

log = redact_logger("broker_guard.positions")

SYMBOL_KEYS = ("symbol", "product_id", "instrument", "pair", "ticker")
ASSET_KEYS = ("currency", "asset", "base", "base_currency", "coin")
QUANTITY_KEYS = ("quantity", "qty", "amount", "size", "balance", "total", "contracts")
VALUE_KEYS = ("usd_value", "value_usd", "market_value", "usd", "notional", "value")
USD_QUOTES = frozenset({"USD", "USDT", "USDC", "BUSD", "DAI", "TUSD", "USDP", "FDUSD"})


@dataclass(frozen=True)
class Position:
    """One holding, all its lots together. ``problem`` says why it must not be closed, if it must not."""

    account: str
    symbol: str
    asset: str
    quantity: float | None
    price: float | None = None
    usd_value: float | None = None
    reported_value: float | None = None
    lots: int = 1
    source: str = "positions"
    problem: str | None = None

    @property
    def closable(self) -> bool:
        return self.problem is None and self.usd_value is not None and self.quantity is not None and self.quantity > 0

    def worth_less_than(self, threshold: float) -> bool:
        """Closable and valued below ``threshold``: the only positions a liquidation may touch."""
        return self.closable and self.usd_value is not None and self.usd_value < threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "symbol": self.symbol,
            "asset": self.asset,
            "quantity": self.quantity,
            "price": self.price,
            "usd_value": self.usd_value,
            "reported_value": self.reported_value,
            "lots": self.lots,
            "problem": self.problem,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _field(entry: Any, keys: Iterable[str]) -> Any:
    for key in keys:
        value = entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)
        if value is not None:
            return value
    return None


def parse_positions(raw: Any, account: str, quote_assets: Iterable[str]) -> list[Position]:
    """Normalise what a broker's positions call returned; lots of one symbol are summed."""
    quotes = {q.upper() for q in quote_assets}
    entries = list(raw.values()) if isinstance(raw, Mapping) and not _field(raw, SYMBOL_KEYS) else list(raw or [])
    if isinstance(raw, Mapping) and all(isinstance(v, (int, float, Decimal)) for v in raw.values()):
        entries = [{"currency": k, "quantity": v} for k, v in raw.items()]  # {"ETH": 0.1, ...}
    groups: dict[str, list[Position]] = {}
    order: list[str] = []
    for entry in entries:
        position = _parse_one(entry, account)
        if position.asset.upper() in quotes:
            continue  # cash is not a position
        key = canonical_symbol(position.symbol) if position.symbol else f"?{len(order)}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(position)
    return [_merge_lots(groups[k]) for k in order]


def _parse_one(entry: Any, account: str) -> Position:
    symbol = _field(entry, SYMBOL_KEYS)
    asset = _field(entry, ASSET_KEYS)
    if not isinstance(symbol, str) or not symbol.strip():
        if isinstance(asset, str) and asset.strip():
            symbol = f"{asset.strip().upper()}-USD"
        else:
            return Position(account, "", "?", None, problem=f"malformed entry without a symbol: {redact(repr(entry))[:80]}")
    asset = asset if isinstance(asset, str) and asset.strip() else base_asset(symbol)
    quantity = _number(_field(entry, QUANTITY_KEYS))
    reported = _number(_field(entry, VALUE_KEYS))
    problem = None
    if quantity is None:
        problem = "malformed or missing quantity"
    return Position(account, symbol, asset.upper(), quantity, reported_value=reported, problem=problem)


def _merge_lots(lots: list[Position]) -> Position:
    first = lots[0]
    if len(lots) == 1:
        merged = first
    else:
        problems = [p.problem for p in lots if p.problem]
        quantity = None if problems else sum(p.quantity or 0.0 for p in lots)
        reported = [p.reported_value for p in lots]
        merged = replace(
            first,
            quantity=quantity,
            reported_value=sum(r for r in reported if r is not None) if all(r is not None for r in reported) else None,
            lots=len(lots),
            problem=problems[0] if problems else None,
        )
        if any((p.quantity or 0) < 0 for p in lots) and merged.problem is None:
            merged = replace(merged, problem="mixed long and short lots: review by hand")
    if merged.problem is None and merged.quantity is not None and merged.quantity <= 0:
        merged = replace(merged, problem="short position: not closed by broker_guard" if merged.quantity < 0 else "zero quantity")
    return merged


def read_positions(guard: GuardedBroker) -> list[Position]:
    """The broker's positions through the profile's positions method (raises when it has none)."""
    raw_broker = guard.__wrapped__
    quotes = guard.guard_config.guard.quote_assets
    if is_ccxt(raw_broker):
        from broker_guard import ccxt_support

        if ccxt_support.is_spot(raw_broker):  # fresh from the exchange: never a fallback balance
            return ccxt_support.spot_positions(raw_broker, resolve(raw_broker.fetch_balance()), guard.account, quotes)
        return ccxt_support.derivative_positions(resolve(raw_broker.fetch_positions()), guard.account)
    method = guard._self_profile.first(raw_broker, "positions")
    if method is None:
        raise TypeError(f"{type(raw_broker).__name__} has no positions method; name one in a custom profile")
    raw = resolve(getattr(guard, method)())
    return parse_positions(raw, guard.account, quotes)


def price_of(guard: GuardedBroker, symbol: str) -> tuple[float | None, str | None]:
    """A price through the guarded price call: (price, None), or (None, why it is unknown)."""
    raw_broker = guard.__wrapped__
    profile = guard._self_profile
    method = next(
        (n for n, s in profile.methods.items() if s.role == "price" and not s.many and callable(getattr(raw_broker, n, None))), None
    )
    if method is None:
        return None, "broker has no price method"
    spec = profile.methods[method]
    try:
        value = resolve(getattr(guard, method)(symbol))
    except BrokerGuardError as exc:
        return None, f"price refused: {type(exc).__name__}"
    except Exception as exc:
        return None, f"price failed: {redact(exc, guard._self_secrets)[:120]}"
    price = spec.price(value)
    return (price, None) if price is not None else (None, "invalid price")


def value_position(guard: GuardedBroker, position: Position) -> Position:
    """Price a position through the guard; an untrustworthy value becomes a ``problem``."""
    if position.problem is not None:
        return position
    quote = quote_asset(position.symbol)
    if quote is not None and quote not in USD_QUOTES:
        return replace(position, problem=f"priced in {quote}, not USD: value unknown")
    price, why = price_of(guard, position.symbol)
    if price is None:
        return replace(position, problem=f"value unknown ({why})")
    assert position.quantity is not None
    value = position.quantity * price
    reported = position.reported_value
    tolerance = guard.guard_config.guard.value_tolerance
    if reported is not None and abs(value - reported) > tolerance * max(abs(reported), abs(value)):
        return replace(position, price=price, problem=f"value unknown: computed ${value:.4f} but broker reports ${reported:.4f}")
    return replace(position, price=price, usd_value=value)


def value_positions(guard: GuardedBroker, positions: list[Position]) -> list[Position]:
    """Value each position; a ``scan`` event after each one lets a command line draw progress on long scans."""
    hook = guard._self_on_event
    out = []
    for done, position in enumerate(positions, 1):
        out.append(value_position(guard, position))
        if hook is not None:
            emit(hook, GuardEvent("scan", guard._self_clock(), position.symbol, {"done": done, "total": len(positions)}))
    return out


def current_quantity(guard: GuardedBroker, position: Position) -> float | None:
    """The position's quantity right now: the broker's ``get_position`` if it has one, else a fresh read."""
    raw_broker = guard.__wrapped__
    single = getattr(raw_broker, "get_position", None)
    if callable(single):
        entry = resolve(single(position.symbol))
        if entry is None:
            return 0.0
        fresh = parse_positions([entry], position.account, ())
    else:
        fresh = read_positions(guard)
    key = canonical_symbol(position.symbol)
    for candidate in fresh:
        if candidate.symbol and canonical_symbol(candidate.symbol) == key:
            return candidate.quantity if candidate.problem is None else None
    return 0.0
