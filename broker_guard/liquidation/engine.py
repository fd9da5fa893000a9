"""Closing positions at the broker, safely: the engine behind dust() and normalize().

The rules (DESIGN.md, "Liquidation safety"): never close a position worth at
or above its threshold; never place an order in dry-run; never close a
position whose value is unknown; value each position again, price and
quantity, just before its order; one failed close does not stop the run;
every action, dry or real, goes to the audit log. The per-run cap counts an
order as spent once it is sent, whatever comes back; an order whose outcome is
unknown (the broker raised after it may have filled) is audited ``unknown``
with the quantity re-read at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from broker_guard.classify import classify
from broker_guard.clock import utc_iso
from broker_guard.errors import GuardRefusedError, StoreError
from broker_guard.events import GuardEvent, emit
from broker_guard.guard.async_bridge import resolve
from broker_guard.guard.context import GuardContext
from broker_guard.guard.profiles import accepts_keyword, is_ccxt, positional_params
from broker_guard.liquidation.ccxt_positions import close_amount
from broker_guard.liquidation.positions import Position
from broker_guard.liquidation.valuation import current_quantity, price_of
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact

log = redact_logger("broker_guard.liquidation")

AUDIT = "audit"
_FAILED_STATUSES = frozenset({"rejected", "failed", "error", "canceled", "cancelled", "expired"})


@dataclass
class Outcome:
    """What happened to one position in one run."""

    position: Position
    action: str  # close_dust | close_small | consolidate | flag_for_review | skip
    status: str  # closed | dry_run | failed | unknown | skipped | flagged | kept
    reason: str = ""
    usd_value: float | None = None
    order: Any = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.position.as_dict()
        out.update(
            action=self.action,
            status=self.status,
            reason=self.reason,
            usd_value=self.usd_value,
            error=self.error,
        )
        return out


@dataclass
class Run:
    """One liquidation run: where audit lines go and how much it has closed so far."""

    ctx: GuardContext
    kind: str  # dust | normalize
    dry_run: bool
    cap_usd: float | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    sent_usd: float = 0.0  # every order sent counts toward the cap, filled, failed or unknown

    def audit(self, outcome: Outcome, **extra: Any) -> str | None:
        """Write the audit line; None when it is durably written, else why not."""
        position = outcome.position
        record = {
            "time": utc_iso(self.ctx.clock()),
            "run_id": self.run_id,
            "kind": self.kind,
            "account": position.account,
            "symbol": position.symbol,
            "quantity": position.quantity,
            "price": position.price,
            "value_usd": outcome.usd_value if outcome.usd_value is not None else position.usd_value,
            "action": outcome.action,
            "dry_run": self.dry_run,
            "outcome": outcome.status,
            # text from the broker enters the audit log here: masked field by field
            "reason": redact(outcome.reason, self.ctx.secrets),
            "error": None if outcome.error is None else redact(outcome.error, self.ctx.secrets),
            **extra,
        }
        try:
            self.ctx.store.append(AUDIT, record)
        except StoreError as exc:
            log.error("audit record for %s not written (%s)", position.symbol, exc)
            return str(exc)
        return None

    def close(self, position: Position, threshold: float, action: str) -> Outcome:
        """Close ``position`` if, valued again right now, it is still worth less than
        ``threshold``."""
        if not position.worth_less_than(threshold):
            why = "not closable: " + (position.problem or "at or above threshold")
            return self.record(Outcome(position, action, "skipped", why))
        if self.dry_run:
            why = "dry run: no order placed"
            return self.record(Outcome(position, action, "dry_run", why, position.usd_value))
        fresh, why, value = self._sized(position, threshold)
        if fresh is None:
            return self.record(Outcome(position, action, "skipped", why, value))
        return self._send(fresh, action)

    def _sized(
        self, position: Position, threshold: float
    ) -> tuple[Position | None, str, float | None]:
        """The position as it will be sold, valued again now; or None, why not, and its value."""
        quantity, price, why = self._revalue(position)
        if why is not None or quantity is None or price is None:
            return None, why or "value unknown on re-read", None
        value = quantity * price
        if not value < threshold:
            return None, f"now worth ${value:.4f}, at or above ${threshold:.2f}", value
        if self.cap_usd is not None and self.sent_usd + value > self.cap_usd:
            return None, f"per-run cap of ${self.cap_usd:.2f} reached", value
        raw = self.ctx.broker
        if is_ccxt(raw):
            amount, refused = close_amount(raw, position.symbol, quantity, price)
            if amount is None:
                return None, refused or "exchange minimum", value
            quantity, value = amount, amount * price
        return replace(position, quantity=quantity, price=price, usd_value=value), "", value

    def _send(self, fresh: Position, action: str) -> Outcome:
        """The pending audit line, then the order; its outcome recorded whatever happens."""
        value = fresh.usd_value
        unwritten = self.audit(Outcome(fresh, action, "pending", "order being sent", value))
        if unwritten is not None:  # no order without its record: fail closed
            log.critical(
                "   ❌ Not closing %s: its pending audit line could not be written (%s). Fix "
                "the audit log's disk or store; no order was sent",
                fresh.symbol,
                unwritten,
            )
            why = "pending audit line not written; no order sent"
            return self.record(Outcome(fresh, action, "failed", why, value, error=unwritten))
        try:
            # an async broker answers with a coroutine, resolved on its own loop
            order = resolve(place_close_order(self.ctx, fresh))
        except GuardRefusedError as exc:  # refused before the broker saw it: nothing spent
            why = f"refused by the guard: {redact(exc, self.ctx.secrets)[:200]}"
            return self.record(Outcome(fresh, action, "skipped", why, value))
        except Exception as exc:
            self.sent_usd += value or 0.0
            return self._raised(fresh, action, exc)
        self.sent_usd += value or 0.0
        rejected = _rejection(order)
        rejected = redact(rejected, self.ctx.secrets)[:300] if rejected else None
        if rejected:
            log.error("   ❌ Failed to close %s: %s", fresh.symbol, rejected)
            why = "broker rejected the close"
            return self.record(Outcome(fresh, action, "failed", why, value, order, rejected))
        log.info("   ✅ Successfully closed %s", fresh.symbol)
        detail = {"kind": self.kind, "action": action, "value_usd": value or 0.0}
        emit(self.ctx.on_event, GuardEvent("liquidation", self.ctx.clock(), fresh.symbol, detail))
        return self.record(Outcome(fresh, action, "closed", "closed at the broker", value, order))

    def _raised(self, fresh: Position, action: str, exc: Exception) -> Outcome:
        """The broker raised: a definite refusal is ``failed``; a timeout or a lost connection
        may have filled, so it is ``unknown`` and the quantity is read again at once."""
        message = redact(exc, self.ctx.secrets)[:300]
        value = fresh.usd_value
        if not classify(exc, self.ctx.balance.transient_exceptions).retryable:
            log.error("   ❌ Failed to close %s: %s", fresh.symbol, message)
            why = "broker refused the close"
            return self.record(Outcome(fresh, action, "failed", why, value, error=message))
        try:
            after: Any = current_quantity(self.ctx, fresh)
        except Exception as reread:
            after = f"re-read failed: {redact(reread, self.ctx.secrets)[:120]}"
        log.error(
            "   ❓ Close of %s raised after it was sent (%s): it may have filled; the quantity "
            "now reads %s. Check the account before closing it again",
            fresh.symbol,
            message,
            after,
        )
        why = "outcome unknown: the broker raised after the order was sent"
        outcome = Outcome(fresh, action, "unknown", why, value, error=message)
        self.audit(outcome, quantity_after=after)
        return outcome

    def _revalue(self, position: Position) -> tuple[float | None, float | None, str | None]:
        try:
            quantity = current_quantity(self.ctx, position)
        except Exception as exc:
            return None, None, f"quantity re-read failed: {redact(exc, self.ctx.secrets)[:120]}"
        if quantity is None or not quantity > 0:
            return (
                None,
                None,
                "no long quantity left to close"
                if quantity is not None
                else "quantity unknown on re-read",
            )
        price, why = price_of(self.ctx, position.symbol)
        if price is None:
            return None, None, f"value unknown on re-read ({why})"
        return quantity, price, None

    def record(self, outcome: Outcome) -> Outcome:
        self.audit(outcome)
        return outcome


def _rejection(order: Any) -> str | None:
    if order is False:
        return "order call returned False"
    if isinstance(order, Mapping):
        status = order.get("status")
        if isinstance(status, str) and status.lower() in _FAILED_STATUSES:
            return f"order status {status}"
        if order.get("success") is False:
            return str(order.get("error") or order.get("message") or "success: false")
    return None


def place_close_order(ctx: GuardContext, position: Position) -> Any:
    """Sell ``position.quantity`` through the guard, forcing past minimum trade sizes where the
    broker allows.

    Preference: ``place_market_order(..., force_liquidate=True)`` (and
    ``ignore_min_trade=True`` when accepted), then ``close_position``, then
    ``create_order(symbol, 'market', 'sell', amount)``, then a plain market
    sell. A ccxt exchange always gets ``create_order``: its ``close_position``
    is for derivatives and raises NotSupported on most spot exchanges. For an
    async broker the answer is a coroutine, which the caller resolves.
    """
    raw = ctx.broker
    broker: Any = ctx.guarded  # through the guard: a close is an order like any other
    symbol, quantity = position.symbol, position.quantity
    if is_ccxt(raw):  # Run.close sized the amount with the exchange's precision and minimums
        return broker.create_order(symbol, "market", "sell", quantity)
    market = getattr(raw, "place_market_order", None)
    if callable(market) and accepts_keyword(market, "force_liquidate"):
        extra = {"force_liquidate": True}
        if accepts_keyword(market, "ignore_min_trade"):
            extra["ignore_min_trade"] = True
        return broker.place_market_order(symbol, "sell", quantity, **extra)
    close = getattr(raw, "close_position", None)
    if callable(close):
        return (
            broker.close_position(symbol, quantity)
            if positional_params(close) >= 2
            else broker.close_position(symbol)
        )
    if callable(getattr(raw, "create_order", None)):
        return broker.create_order(symbol, "market", "sell", quantity)
    if callable(market):
        return broker.place_market_order(symbol, "sell", quantity)
    raise TypeError(
        f"{type(raw).__name__} has no way to close a position (place_market_order, "
        f"close_position, create_order)"
    )
