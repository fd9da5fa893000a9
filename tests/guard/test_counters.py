"""GuardCounters: totals from the guard's events, with labels that stay bounded."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from broker_guard.events import GuardEvent
from broker_guard.guard.counters import MAX_SYMBOLS, OTHER, GuardCounters


def test_each_event_kind_lands_in_its_counter() -> None:
    counters = GuardCounters()
    events = [
        GuardEvent("retry", 0.0),
        GuardEvent("retry", 0.0),
        GuardEvent("fallback", 0.0),
        GuardEvent("refused", 0.0, "AUT-USD", {"reason": "restricted"}),
        GuardEvent("refused", 0.0, "X/USD", {"reason": "halted"}),
        GuardEvent("failure", 0.0, "LUNA-USD", {"kind": "bad_symbol"}),
        GuardEvent("liquidation", 0.0, "DOGE-USD", {"kind": "dust", "value_usd": 0.75}),
        GuardEvent("liquidation", 0.0, "ADA-USD", {"kind": "dust", "value_usd": 0.5}),
        GuardEvent("scan", 0.0, None, {"done": 1, "total": 2}),  # not counted
    ]
    for event in events:
        counters.observe(event)
    totals = counters.as_dict()
    assert totals == {
        "retries": 2,
        "fallbacks": 1,
        "refusals": {"restricted": 1, "halted": 1},
        "price_failures": [{"symbol": "LUNA-USD", "kind": "bad_symbol", "count": 1}],
        "liquidated_usd": {"dust": 1.25},
    }
    json.dumps(totals, allow_nan=False)


@given(st.lists(st.text(min_size=1, max_size=8), max_size=300))
def test_symbol_labels_never_exceed_the_bound(symbols: list[str]) -> None:
    """However many symbols fail, at most MAX_SYMBOLS are named (the rest are "other"), and no
    failure goes uncounted."""
    counters = GuardCounters()
    for symbol in symbols:
        counters.observe(GuardEvent("failure", 0.0, symbol, {"kind": "bad_symbol"}))
    failures = counters.as_dict()["price_failures"]
    named = {f["symbol"] for f in failures} - {OTHER}
    assert len(named) <= MAX_SYMBOLS
    assert sum(f["count"] for f in failures) == len(symbols)
