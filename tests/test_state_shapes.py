"""Parseable but wrong state: every shape a hand edit, an old version or a bad disk leaves.

Whatever the shape, a guard starts, a failing price call raises the broker's own error, the
symbols a damaged record names stay blocked (frozen for review), and health says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker, JsonFileStore, SymbolFrozenError
from broker_guard.paper import PaperSymbolError
from broker_guard.testing import FakeClock, PaperBroker

GOOD_FROZEN = {
    "symbol": "SIG-USD",
    "reason": "operator",
    "last_error": "",
    "frozen_at": "2026-01-01T00:00:00+00:00",
    "consecutive_failures": 0,
    "manual_review": True,
    "auto_unfreeze": True,
    "cooldown_hours": 1.0,
}


def _legacy(tmp_path: Path, name: str, data: Any, raw: str | None = None) -> None:
    text = raw if raw is not None else json.dumps({"schema_version": 1, "data": data})
    (tmp_path / f"{name}.json").write_text(text)


def _guard(tmp_path: Path, clock: FakeClock) -> tuple[Any, PaperBroker]:
    broker = PaperBroker(prices={"BTC-USD": 50_000.0, "SIG-USD": 10.0}, cash=1_000.0)
    config = GuardConfig.load(env={}, data_dir=str(tmp_path))
    guard = GuardedBroker(
        broker, config, store=JsonFileStore(tmp_path, clock=clock), clock=clock, sleep=clock.sleep
    )
    return guard, broker


@pytest.mark.parametrize("section", ["frozen", "failures"])
@pytest.mark.parametrize("shape", [[], None, "SIG-USD", 7])
def test_a_section_of_the_wrong_shape_starts_and_alerts(
    tmp_path: Path, clock: FakeClock, section: str, shape: Any
) -> None:
    _legacy(tmp_path, "symbol_freeze", {section: shape})
    guard, _ = _guard(tmp_path, clock)  # no AttributeError
    assert guard.get_current_price("BTC-USD") == 50_000.0
    health = guard.health()
    assert not health["ok"] and any(section in a for a in health["alerts"])


@pytest.mark.parametrize(
    "entry",
    [5, "5", {"count": "5"}, {"count": "NaN"}, {"count": 1.5}, {"count": True}, {"count": -1}],
    ids=["bare number", "string", "count string", "NaN", "float", "bool", "negative"],
)
def test_a_malformed_count_holds_the_symbol_and_failures_raise_the_brokers_error(
    tmp_path: Path, clock: FakeClock, entry: Any
) -> None:
    _legacy(tmp_path, "symbol_freeze", {"failures": {"SIG/USD": entry}})
    guard, broker = _guard(tmp_path, clock)
    with pytest.raises(SymbolFrozenError):  # held frozen for review, not released
        guard.place_market_order("SIG-USD", "buy", 1.0)
    assert not guard.health()["ok"]
    guard.freeze_manager.unfreeze_symbol("SIG-USD", "reviewed")
    broker.delist("SIG-USD")
    for _ in range(3):
        with pytest.raises(PaperSymbolError):  # the broker's error, never AttributeError
            guard.get_current_price("SIG-USD")
    assert guard.freeze_manager.is_frozen("SIG-USD")


@pytest.mark.parametrize("raw", ['{"count": NaN}', '{"count": 1e400}', '{"count": Infinity}'])
def test_non_finite_numbers_in_a_state_file_hold_the_symbol(
    tmp_path: Path, clock: FakeClock, raw: str
) -> None:
    text = '{"schema_version": 1, "data": {"failures": {"SIG/USD": ' + raw + "}}}"
    _legacy(tmp_path, "symbol_freeze", None, raw=text)
    guard, _ = _guard(tmp_path, clock)
    with pytest.raises(SymbolFrozenError):
        guard.place_market_order("SIG-USD", "buy", 1.0)
    assert guard.get_current_price("BTC-USD") == 50_000.0


def test_a_deeply_nested_state_file_does_not_crash_the_guard(
    tmp_path: Path, clock: FakeClock
) -> None:
    _legacy(tmp_path, "symbol_freeze", None, raw="[" * 100_000 + "]" * 100_000)
    guard, _ = _guard(tmp_path, clock)  # no RecursionError
    assert guard.get_current_price("BTC-USD") == 50_000.0
    assert not guard.health()["ok"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("auto_unfreeze", "false"),
        ("manual_review", "no"),
        ("cooldown_hours", "NaN"),
        ("frozen_at", 5),
    ],
)
def test_a_frozen_record_with_a_wrong_type_stays_frozen_for_review(
    tmp_path: Path, clock: FakeClock, field: str, value: Any
) -> None:
    record = {**GOOD_FROZEN, field: value}
    _legacy(tmp_path, "symbol_freeze", {"frozen": {"SIG/USD": record}})
    guard, _ = _guard(tmp_path, clock)
    clock.advance(10 * 86400)  # far past any cooldown: a misread "false" would auto-unfreeze
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("SIG-USD")
    with pytest.raises(SymbolFrozenError):
        guard.place_market_order("SIG-USD", "buy", 1.0)
    assert any("SIG/USD" in a for a in guard.health()["alerts"])


@pytest.mark.parametrize("shape", ["SIG-USD, BTC-USD", {"SIG-USD": True}, [1, 2]])
def test_a_restricted_list_of_the_wrong_shape_keeps_restricting_and_alerts(
    tmp_path: Path, clock: FakeClock, shape: Any
) -> None:
    _legacy(tmp_path, "restricted_symbols", {"symbols": shape})
    guard, _ = _guard(tmp_path, clock)
    assert "AUT/USD" in guard.freeze_manager.get_restricted_symbols()  # the shipped list stays
    if isinstance(shape, str):
        assert "SIG/USD" in guard.freeze_manager.get_restricted_symbols()  # and what it named
    health = guard.health()
    assert not health["ok"] and any("restricted" in a for a in health["alerts"])
