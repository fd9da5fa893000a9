"""Time and order: intervals on the monotonic clock, records ordered by sequence, never by the
wall clock; an older read never overwrites a newer state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker_guard import (
    BalanceUnavailableError,
    GuardConfig,
    GuardedBroker,
    JsonFileStore,
    SymbolFrozenError,
)
from broker_guard.symbol_freeze_manager import SymbolFreezeManager
from broker_guard.testing import FakeClock, PaperBroker

DAY = 86_400.0


def test_an_operators_freeze_is_seen_within_a_second_after_the_clock_steps_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    guard: Any = GuardedBroker(
        PaperBroker(prices={"SOL-USD": 100.0}, cash=1_000.0),
        GuardConfig.load(env={}, data_dir=str(tmp_path)),
        store=JsonFileStore(tmp_path, clock=clock),
        clock=clock,
    )
    assert guard.get_current_price("SOL-USD") == 100.0
    clock.step(-3600.0)  # NTP steps the wall clock back one hour
    operator = SymbolFreezeManager(store=JsonFileStore(tmp_path, clock=clock), clock=clock)
    operator.freeze("SOL-USD", "operator: delisting announced")
    clock.advance(1.5)
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("SOL-USD")
    with pytest.raises(SymbolFrozenError):
        guard.place_market_order("SOL-USD", "buy", 1.0)


def test_a_reload_finishing_late_never_overwrites_a_freeze_made_meanwhile(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = SymbolFreezeManager(store=JsonFileStore(tmp_path, clock=clock), clock=clock)
    store: Any = manager.store
    real_load = store.load
    raced = []

    def load_racing_a_freeze(name: str) -> Any:
        result = real_load(name)  # the state before the freeze
        if name == "symbol_freeze" and not raced:
            raced.append(True)
            manager.freeze("XRP-USD", "made while the reload was in flight")
        return result

    monkeypatch.setattr(store, "load", load_racing_a_freeze)
    monkeypatch.setattr(store, "changes", lambda name, since: None)  # every refresh reads all
    clock.advance(2.0)
    manager.is_frozen("BTC-USD")  # the refresh whose read finishes after the freeze
    assert raced and manager.is_frozen("XRP-USD")
    with pytest.raises(SymbolFrozenError):
        manager.check_entry("XRP/USD")


def _balance_guard(tmp_path: Path, clock: FakeClock, broker: PaperBroker, **balance: Any) -> Any:
    config = GuardConfig.load(
        env={},
        data_dir=str(tmp_path),
        balance={"jitter": False, "persist_interval_seconds": 0, **balance},
    )
    return GuardedBroker(
        broker, config, store=JsonFileStore(tmp_path, clock=clock), clock=clock, sleep=clock.sleep
    )


def test_a_balance_saved_under_a_fast_clock_is_of_unknown_age_not_fresh(
    tmp_path: Path, clock: FakeClock
) -> None:
    clock.step(DAY)  # the clock runs a day fast
    _balance_guard(tmp_path, clock, PaperBroker(cash=1_000.0)).get_account_balance()
    clock.step(-DAY)  # fixed
    down = PaperBroker(cash=5.0)
    down.fail_next("get_account_balance", 100, ConnectionError("down"))
    strict = _balance_guard(tmp_path, clock, down, max_fallback_age_minutes=60)
    with pytest.raises(BalanceUnavailableError, match="unknown age"):
        strict.get_account_balance()
    assert any("unknown age" in a for a in strict.health()["alerts"])


def test_a_newer_balance_is_saved_over_a_future_dated_one(tmp_path: Path, clock: FakeClock) -> None:
    clock.step(DAY)
    _balance_guard(tmp_path, clock, PaperBroker(cash=1_000.0)).get_account_balance()
    clock.step(-DAY)
    _balance_guard(tmp_path, clock, PaperBroker(cash=2_000.0)).get_account_balance()
    down = PaperBroker(cash=5.0)
    down.fail_next("get_account_balance", 100, ConnectionError("down"))
    assert _balance_guard(tmp_path, clock, down).get_account_balance() == 2_000.0
