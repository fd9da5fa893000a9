from __future__ import annotations

import threading
from typing import Any

import pytest

from broker_guard.liquidation.maintenance import Maintenance, schedule_seconds
from broker_guard.testing import FakeClock, PaperBroker


def test_schedule_forms() -> None:
    assert schedule_seconds("daily") == 86400 and schedule_seconds("hourly") == 3600
    assert (
        schedule_seconds("every 30m") == 1800
        and schedule_seconds("every 2h") == 7200
        and schedule_seconds("off") is None
    )
    with pytest.raises(ValueError):
        schedule_seconds("weekly")


def test_runs_normalization_on_startup_then_dust_on_schedule(
    make_guard: Any, clock: FakeClock
) -> None:
    broker = PaperBroker(prices={"ETH-USD": 2500.0}, positions={"ETH-USD": 0.0002})
    guard = make_guard(broker, dust={"schedule": "hourly"})
    m = Maintenance(guard.guard_context)
    assert m.tick() == ["normalize"]  # startup normalization is a dry run
    assert broker.orders == []
    clock.advance(3599)
    assert m.tick() == []
    clock.advance(1)
    assert m.tick() == ["dust"] and len(broker.orders) == 1
    clock.advance(1800)
    assert m.tick() == []


def test_off_schedule_and_disabled_run_nothing(make_guard: Any, clock: FakeClock) -> None:
    guard = make_guard(
        PaperBroker(), dust={"schedule": "off"}, normalization={"run_on_startup": False}
    )
    m = Maintenance(guard.guard_context)
    clock.advance(10 * 86400)
    assert m.tick() == []


def test_a_failing_pass_never_escapes(make_guard: Any, clock: FakeClock) -> None:
    broker = PaperBroker()
    broker.fail_next("get_positions", 5, "network")
    m = Maintenance(make_guard(broker, dust={"schedule": "every 1m"}).guard_context)
    assert m.tick() == ["normalize"]
    clock.advance(60)
    assert m.tick() == ["dust"]
    (_, normalized), (_, dusted) = m.runs
    assert "PaperBroker:paper" in normalized["account_errors"]  # reported per account
    assert isinstance(dusted, ConnectionError)  # kept, logged, not raised


def test_never_two_passes_at_once(make_guard: Any, clock: FakeClock) -> None:
    entered = threading.Event()
    release = threading.Event()

    class Slow(PaperBroker):
        def get_positions(self) -> Any:
            entered.set()
            release.wait(5)
            return []

    m = Maintenance(make_guard(Slow()).guard_context)
    worker = threading.Thread(target=m.tick)
    worker.start()
    assert entered.wait(5)
    assert m.tick() == []  # skipped while the first pass runs
    release.set()
    worker.join(5)


def test_thread_starts_and_stops(make_guard: Any) -> None:
    guard = make_guard(PaperBroker(), dust={"schedule": "off"})
    m = guard.start_maintenance(poll=0.01)
    assert m.running
    guard.stop_maintenance()
    assert not m.running and m.runs and m.runs[0][0] == "normalize"
