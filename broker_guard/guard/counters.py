"""GuardCounters: what one guard has done since it started, counted from its own events.

The counters are the in-process half of the metrics (``broker_guard.metrics``):
retries, fallbacks, refusals by reason, price failures by symbol and kind, USD
liquidated by kind. They are fed by the guard's events, so the success path
never touches them, and their labels are bounded: past ``MAX_SYMBOLS``
distinct symbols, further ones are counted under ``other``.
"""

from __future__ import annotations

import threading
from typing import Any

from broker_guard.events import GuardEvent

MAX_SYMBOLS = 50
OTHER = "other"


class GuardCounters:
    """Totals since this guard started; ``observe`` is the event hook that feeds them."""

    def __init__(self) -> None:
        self.retries = 0
        self.fallbacks = 0
        self.refusals: dict[str, int] = {}
        self.price_failures: dict[tuple[str, str], int] = {}
        self.liquidated_usd: dict[str, float] = {}
        self._symbols: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, event: GuardEvent) -> None:
        kind, detail = event.kind, event.detail
        with self._lock:
            if kind == "retry":
                self.retries += 1
            elif kind == "fallback":
                self.fallbacks += 1
            elif kind == "refused":
                reason = str(detail.get("reason", "refused"))
                self.refusals[reason] = self.refusals.get(reason, 0) + 1
            elif kind == "failure":
                key = (self._label(event.symbol), str(detail.get("kind", "unknown")))
                self.price_failures[key] = self.price_failures.get(key, 0) + 1
            elif kind == "liquidation":
                what = str(detail.get("kind", "unknown"))
                value = float(detail.get("value_usd") or 0.0)
                self.liquidated_usd[what] = self.liquidated_usd.get(what, 0.0) + value

    def _label(self, symbol: str | None) -> str:
        """The symbol as a label value: the first ``MAX_SYMBOLS`` are named, the rest ``other``."""
        name = symbol or "unknown"
        if name in self._symbols or len(self._symbols) < MAX_SYMBOLS:
            self._symbols.add(name)
            return name
        return OTHER

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe totals, as a heartbeat carries them."""
        with self._lock:
            return {
                "retries": self.retries,
                "fallbacks": self.fallbacks,
                "refusals": dict(self.refusals),
                "price_failures": [
                    {"symbol": s, "kind": k, "count": n}
                    for (s, k), n in sorted(self.price_failures.items())
                ],
                "liquidated_usd": dict(self.liquidated_usd),
            }
