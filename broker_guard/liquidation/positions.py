"""Positions normalised to one small record: lots of one symbol summed, cash dropped, problems
named.

Lots of the same symbol are added up before any threshold is applied; an
entry that cannot be read (no symbol, no quantity, short or mixed lots) keeps
a ``problem``, so it is reported and never liquidated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from broker_guard.core.validate import real_number
from broker_guard.guard.exposure import ASSET_KEYS, QUANTITY_KEYS, SYMBOL_KEYS, field
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact
from broker_guard.symbols import base_asset, canonical_symbol

log = redact_logger("broker_guard.positions")

VALUE_KEYS = ("usd_value", "value_usd", "market_value", "usd", "notional", "value")
USD_QUOTES = frozenset({"USD", "USDT", "USDC", "BUSD", "DAI", "TUSD", "USDP", "FDUSD"})


@dataclass(frozen=True)
class Position:
    """One holding, all its lots together. ``problem`` says why it must not be closed, if it must
    not."""

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
        return (
            self.problem is None
            and self.usd_value is not None
            and self.quantity is not None
            and self.quantity > 0
        )

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


def number(value: Any) -> float | None:
    """A finite real number of any type a broker sends (``core.validate.real_number``)."""
    return real_number(value)


def parse_positions(raw: Any, account: str, quote_assets: Iterable[str]) -> list[Position]:
    """Normalise what a broker's positions call returned; lots of one symbol are summed."""
    quotes = {q.upper() for q in quote_assets}
    entries = (
        list(raw.values())
        if isinstance(raw, Mapping) and not field(raw, SYMBOL_KEYS)
        else list(raw or [])
    )
    if isinstance(raw, Mapping) and all(real_number(v) is not None for v in raw.values()):
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
    symbol = field(entry, SYMBOL_KEYS)
    asset = field(entry, ASSET_KEYS)
    if not isinstance(symbol, str) or not symbol.strip():
        if isinstance(asset, str) and asset.strip():
            symbol = f"{asset.strip().upper()}-USD"
        else:
            return Position(
                account,
                "",
                "?",
                None,
                problem=f"malformed entry without a symbol: {redact(repr(entry))[:80]}",
            )
    asset = asset if isinstance(asset, str) and asset.strip() else base_asset(symbol)
    quantity = number(field(entry, QUANTITY_KEYS))
    reported = number(field(entry, VALUE_KEYS))
    problem = None
    if quantity is None:
        problem = "malformed or missing quantity"
    return Position(
        account, symbol, asset.upper(), quantity, reported_value=reported, problem=problem
    )


def _merge_lots(lots: list[Position]) -> Position:
    """One position for all lots of a symbol; a short or empty result is named, never closed."""
    merged = lots[0] if len(lots) == 1 else _sum_lots(lots)
    if merged.problem is None and merged.quantity is not None and merged.quantity <= 0:
        short = merged.quantity < 0
        why = "short position: not closed by broker_guard" if short else "zero quantity"
        merged = replace(merged, problem=why)
    return merged


def _sum_lots(lots: list[Position]) -> Position:
    problems = [p.problem for p in lots if p.problem]
    quantity = None if problems else sum(p.quantity or 0.0 for p in lots)
    if not problems and any((p.quantity or 0) < 0 for p in lots):
        problems = ["mixed long and short lots: review by hand"]
    reported = [p.reported_value for p in lots]
    return replace(
        lots[0],
        quantity=quantity,
        reported_value=None if None in reported else sum(r or 0.0 for r in reported),
        lots=len(lots),
        problem=problems[0] if problems else None,
    )
