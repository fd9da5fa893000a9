"""Small helpers shared by several test modules."""

from __future__ import annotations

from typing import Any

import pytest


def fail_price_calls(guard: Any, symbol: str, times: int = 3) -> None:
    """``times`` price calls on a symbol the paper broker has delisted, each failing with its own
    error."""
    for _ in range(times):
        with pytest.raises(Exception, match="Price not available"):
            guard.get_current_price(symbol)


def start_bot(data_dir: str, **settings: Any) -> Any:
    """A bot's guard on ``data_dir`` (the paper broker, its clock at the real time) that has
    fetched its balance once, so its heartbeat is in the shared state."""
    import time

    from broker_guard import GuardConfig, GuardedBroker
    from broker_guard.testing import FakeClock, PaperBroker

    clock = settings.pop("clock", None) or FakeClock(time.time())
    config = GuardConfig.load(env={}, data_dir=data_dir, **settings)
    guard = GuardedBroker(
        PaperBroker(prices={"BTC-USD": 50_000.0}), config, clock=clock, sleep=clock.sleep
    )
    guard.get_account_balance()
    return guard
