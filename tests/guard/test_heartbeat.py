"""Heartbeat: written when a guard is used and a beat is due, at once when a balance error streak
starts, alerts or ends, never raised into the call that happened to be due."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker, MemoryStore, StoreError
from broker_guard.guard.heartbeat import STATE, read_heartbeats
from broker_guard.testing import FakeClock, PaperBroker


class CountingStore(MemoryStore):
    """A memory store that counts heartbeat writes and can refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.beats = 0
        self.refuse: str | None = None

    def update(self, name: str, mutate: Any, **kwargs: Any) -> Any:
        if name == STATE:
            if self.refuse:
                raise StoreError(self.refuse)
            self.beats += 1
        return super().update(name, mutate, **kwargs)


def guarded(interval: float = 30.0, **guard: Any) -> tuple[Any, PaperBroker, CountingStore, Any]:
    clock = FakeClock()
    store = CountingStore()
    broker = PaperBroker(prices={"BTC-USD": 50_000.0}, cash=500.0)
    config = GuardConfig.load(env={}, guard={"heartbeat_seconds": interval, **guard})
    guard_ = GuardedBroker(broker, config, store=store, clock=clock, sleep=clock.sleep)
    return guard_, broker, store, clock


def test_a_starting_guard_is_seen_at_once_and_then_at_most_once_per_interval() -> None:
    guard, _broker, store, clock = guarded()
    assert store.beats == 1
    for _ in range(20):
        guard.get_account_balance()
        guard.get_current_price("BTC-USD")
        clock.advance(1.0)  # 20 s of trading, a refresh each second
    assert store.beats == 1
    clock.advance(11.0)
    guard.get_current_price("BTC-USD")  # the refresh after the interval beats
    assert store.beats == 2
    record = read_heartbeats(store)[guard.account]
    assert record["seen_at"] == clock() and record["interval_seconds"] == 30.0


def test_interval_zero_writes_nothing() -> None:
    guard, broker, store, clock = guarded(0)
    broker.fail_next("get_account_balance", 3, "network")
    with pytest.raises(Exception, match="unavailable"):
        guard.get_account_balance()
    clock.advance(3600)
    guard.get_current_price("BTC-USD")
    assert store.beats == 0 and read_heartbeats(store) == {}


def test_a_balance_error_streak_is_written_at_once_and_so_is_its_end() -> None:
    guard, broker, store, _clock = guarded()
    guard.get_account_balance()
    before = store.beats
    broker.fail_next("get_account_balance", 3, "network")
    guard.get_account_balance()  # within the interval: the streak is written anyway
    assert store.beats == before + 1
    beat = read_heartbeats(store)[guard.account]["balance"]
    assert beat["consecutive_errors"] == 3 and beat["fallback_in_use"] is True
    assert beat["fallback_age_seconds"] == pytest.approx(6.0)  # the retry waits: 2 s + 4 s
    guard.get_account_balance()  # recovered: written at once
    beat = read_heartbeats(store)[guard.account]["balance"]
    assert store.beats == before + 2
    assert beat["consecutive_errors"] == 0 and beat["fallback_in_use"] is False


def test_a_store_refusing_the_heartbeat_never_fails_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard, _broker, store, clock = guarded()
    store.refuse = "disk full"
    with caplog.at_level(logging.WARNING, logger="broker_guard.heartbeat"):
        for _ in range(3):
            clock.advance(31)
            assert guard.get_account_balance() == 500.0
            assert guard.get_current_price("BTC-USD") == 50_000.0
    said = [r for r in caplog.records if "heartbeat" in r.getMessage()]
    assert len(said) == 1 and "disk full" in said[0].getMessage()  # once per problem
    store.refuse = None
    clock.advance(31)
    guard.get_account_balance()
    assert read_heartbeats(store)[guard.account]["seen_at"] == clock()


def test_a_bug_in_the_store_is_not_raised_into_trading_either(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard, _broker, _store, clock = guarded()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(guard.guard_context.heartbeat, "record", broken)
    clock.advance(31)
    assert guard.get_account_balance() == 500.0


def test_the_record_carries_what_the_guard_sees_and_its_counters() -> None:
    guard, broker, store, clock = guarded(name="alpha")
    broker.delist("BTC-USD")
    for _ in range(3):
        with pytest.raises(Exception, match="Price not available"):
            guard.get_current_price("BTC-USD")
    with pytest.raises(Exception, match="restricted"):
        guard.get_current_price("AUT-USD")
    guard.halt("test")
    clock.advance(31)
    guard.get_account_balance()
    record = read_heartbeats(store)["alpha"]
    assert record["account"] == guard.account and record["name"] == "alpha"
    assert record["frozen_count"] == 1 and record["halted"] is True
    counters = record["counters"]
    assert counters["refusals"] == {"restricted": 1}
    assert counters["price_failures"] == [{"symbol": "BTC-USD", "kind": "bad_symbol", "count": 3}]


def test_health_probes_and_scrapes_of_a_hung_bot_do_not_keep_it_seen() -> None:
    """Review finding: a bot whose trading loop is dead, but whose health() or metrics are read
    (a liveness probe, a scrape), kept beating through the stats' refresh: health said OK."""
    guard, _broker, store, clock = guarded()
    written = store.beats
    for _ in range(240):  # an hour of probes every 15 s, no trading call
        clock.advance(15)
        guard.health()
        guard.freeze_manager.get_stats()
    assert store.beats == written


def test_a_beat_waits_50_ms_for_the_lock_and_is_never_queued_for_replay() -> None:
    """Review finding: a beat waited the full lock_timeout (10 s) on the trading call that was
    due, on the event loop for an async broker; and an outage queued every beat for replay."""
    guard, _broker, store, clock = guarded()
    seen: list[dict[str, Any]] = []
    real = store.update

    def spy(name: str, mutate: Any, **kwargs: Any) -> Any:
        if name == STATE:
            seen.append(kwargs)
        return real(name, mutate, **kwargs)

    store.update = spy  # type: ignore[method-assign]
    clock.advance(31)
    guard.get_account_balance()
    assert seen and all(k.get("urgent") is True and k.get("replay") is False for k in seen)


def test_a_bots_degraded_store_is_in_its_heartbeat() -> None:
    """Review finding: the bot's store kept state in memory only (its own health alerted) while
    its heartbeat said nothing, so `broker-guard health` said "store ok"."""
    from broker_guard.state.base import StoreHealth

    guard, _broker, store, clock = guarded()
    store.health = lambda: StoreHealth(  # type: ignore[method-assign]
        ok=False, degraded={"symbol_freeze": "disk full"}
    )
    clock.advance(31)
    guard.get_account_balance()
    assert "symbol_freeze: disk full" in read_heartbeats(store)[guard.account]["store_problem"]
