"""Positions read through the guard's profile and valued through the guarded price call.

A position whose value cannot be trusted (no price, frozen, restricted,
invalid price, or a computed value far from the broker's own) is marked
unknown, so it is reported and never liquidated.
"""

from __future__ import annotations

from dataclasses import replace

from broker_guard.errors import BrokerGuardError
from broker_guard.events import GuardEvent, emit
from broker_guard.guard.async_bridge import resolve
from broker_guard.guard.context import GuardContext
from broker_guard.guard.profiles import is_ccxt
from broker_guard.liquidation import ccxt_positions
from broker_guard.liquidation.positions import USD_QUOTES, Position, parse_positions
from broker_guard.redact import redact
from broker_guard.symbols import canonical_symbol, quote_asset


def read_positions(ctx: GuardContext) -> list[Position]:
    """The broker's positions through the profile's positions method (raises when it has none)."""
    raw_broker = ctx.broker
    quotes = ctx.config.guard.quote_assets
    if is_ccxt(raw_broker):
        if ccxt_positions.is_spot(raw_broker):  # fresh from the exchange: never a fallback balance
            return ccxt_positions.spot_positions(
                raw_broker, resolve(raw_broker.fetch_balance()), ctx.account, quotes
            )
        return ccxt_positions.derivative_positions(
            resolve(raw_broker.fetch_positions()), ctx.account
        )
    method = ctx.profile.first(raw_broker, "positions")
    if method is None:
        raise TypeError(
            f"{type(raw_broker).__name__} has no positions method; name one in a custom profile"
        )
    raw = resolve(getattr(ctx.guarded, method)())
    return parse_positions(raw, ctx.account, quotes)


def price_of(ctx: GuardContext, symbol: str) -> tuple[float | None, str | None]:
    """A price through the guarded price call: (price, None), or (None, why it is unknown)."""
    raw_broker = ctx.broker
    profile = ctx.profile
    method = next(
        (
            n
            for n, s in profile.methods.items()
            if s.role == "price" and not s.many and callable(getattr(raw_broker, n, None))
        ),
        None,
    )
    if method is None:
        return None, "broker has no price method"
    spec = profile.methods[method]
    try:
        value = resolve(getattr(ctx.guarded, method)(symbol))
    except BrokerGuardError as exc:
        return None, f"price refused: {type(exc).__name__}"
    except Exception as exc:
        return None, f"price failed: {redact(exc, ctx.secrets)[:120]}"
    price = spec.price(value)
    return (price, None) if price is not None else (None, "invalid price")


def value_position(ctx: GuardContext, position: Position) -> Position:
    """Price a position through the guard; an untrustworthy value becomes a ``problem``."""
    if position.problem is not None:
        return position
    quote = quote_asset(position.symbol)
    if quote is not None and quote not in USD_QUOTES:
        return replace(position, problem=f"priced in {quote}, not USD: value unknown")
    price, why = price_of(ctx, position.symbol)
    if price is None:
        return replace(position, problem=f"value unknown ({why})")
    assert position.quantity is not None
    value = position.quantity * price
    reported = position.reported_value
    tolerance = ctx.config.guard.value_tolerance
    if reported is not None and abs(value - reported) > tolerance * max(abs(reported), abs(value)):
        return replace(
            position,
            price=price,
            problem=f"value unknown: computed ${value:.4f} but broker reports ${reported:.4f}",
        )
    return replace(position, price=price, usd_value=value)


def value_positions(ctx: GuardContext, positions: list[Position]) -> list[Position]:
    """Value each position; a ``scan`` event after each one lets a command line draw progress on
    long scans."""
    hook = ctx.on_event
    out = []
    for done, position in enumerate(positions, 1):
        out.append(value_position(ctx, position))
        if hook is not None:
            emit(
                hook,
                GuardEvent(
                    "scan", ctx.clock(), position.symbol, {"done": done, "total": len(positions)}
                ),
            )
    return out


def current_quantity(ctx: GuardContext, position: Position) -> float | None:
    """The position's quantity right now: the broker's ``get_position`` if it has one, else a fresh
    read."""
    raw_broker = ctx.broker
    single = getattr(raw_broker, "get_position", None)
    if callable(single):
        entry = resolve(single(position.symbol))
        if entry is None:
            return 0.0
        fresh = parse_positions([entry], position.account, ())
    else:
        fresh = read_positions(ctx)
    key = canonical_symbol(position.symbol)
    for candidate in fresh:
        if candidate.symbol and canonical_symbol(candidate.symbol) == key:
            return candidate.quantity if candidate.problem is None else None
    return 0.0
