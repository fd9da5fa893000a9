"""Guards of a fleet sharing one real Redis: freezes and unfreezes reach every guard within the
refresh
interval, the success path makes no round trip, the operator's CLI acts on the fleet, and trading
goes on
through a Redis outage (no order on a frozen symbol, counts replayed after it)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import fail_price_calls
from redis_server import RedisServer
from tcp_link import TcpLink

from broker_guard import GuardConfig, GuardedBroker, RedisStore, SymbolFrozenError
from broker_guard.cli import main
from broker_guard.testing import FakeClock, PaperBroker

Make = Callable[..., RedisStore]
PRICES = {"BTC-USD": 50_000.0, "ETH-USD": 2_500.0, "SOL-USD": 100.0, "LUNA-USD": 0.0001}


def make_guard(store: RedisStore, clock: FakeClock, **sections: Any) -> tuple[Any, PaperBroker]:
    paper = PaperBroker(prices=PRICES, cash=1_000.0, failure_rate=0.0)
    paper.delist("LUNA-USD")
    config = GuardConfig.load(env={}, **sections)
    guard = GuardedBroker(paper, config, store=store, clock=clock, sleep=clock.sleep)
    return guard, paper


def subscribed(store: RedisStore) -> None:
    assert store.wait_until(lambda s: s.version("symbol_freeze")[0] >= 1)


def test_a_freeze_by_one_worker_is_refused_by_another_within_a_second(
    make_redis_store: Make,
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    store_a, store_b = make_redis_store(), make_redis_store()
    guard_a, _ = make_guard(store_a, clock_a)
    guard_b, paper_b = make_guard(store_b, clock_b)
    subscribed(store_b)
    fail_price_calls(guard_a, "LUNA-USD")  # frozen on worker A
    # the notice arrived
    assert store_b.wait_until(lambda s: s.version("symbol_freeze")[1] >= 3, timeout=5)
    clock_b.advance(1.0)  # worker B's next refresh, at most a second later
    with pytest.raises(SymbolFrozenError):
        guard_b.get_current_price("LUNA-USD")
    with pytest.raises(SymbolFrozenError):
        guard_b.place_market_order("LUNA-USD", "buy", 1.0)
    assert paper_b.orders == []

    # an unfreeze anywhere reaches A too
    guard_b.freeze_manager.unfreeze_symbol("LUNA-USD", "relisted")
    assert store_a.wait_until(
        lambda s: "LUNA/USD" not in s.read("symbol_freeze").get("frozen", {}), timeout=5
    )
    clock_a.advance(1.0)
    assert not guard_a.freeze_manager.is_frozen("LUNA-USD")


def test_failure_counts_from_two_workers_add_up(make_redis_store: Make) -> None:
    clock_a, store_a = FakeClock(), make_redis_store()
    guard_a, _ = make_guard(store_a, clock_a, symbol_freeze={"failure_threshold": 4})
    guard_b, _ = make_guard(make_redis_store(), FakeClock(), symbol_freeze={"failure_threshold": 4})
    fail_price_calls(guard_a, "LUNA-USD", 2)
    fail_price_calls(guard_b, "LUNA-USD", 2)  # B's second failure is the fleet's fourth
    assert guard_b.freeze_manager.is_frozen("LUNA-USD")
    assert store_a.wait_until(lambda s: s.version("symbol_freeze")[1] >= 4, timeout=5)
    clock_a.advance(1.0)
    assert guard_a.freeze_manager.get_failure_count(
        "LUNA-USD"
    ) == 4 and guard_a.freeze_manager.is_frozen("LUNA-USD")


def _commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command on the server, read over one connection (a new one would add its HELLO)."""
    return {name: int(value["calls"]) for name, value in client.info("commandstats").items()}


def test_successful_price_calls_make_no_round_trip(
    make_redis_store: Make, redis_server: Any
) -> None:
    clock = FakeClock()
    store = make_redis_store()
    guard, _ = make_guard(store, clock)
    subscribed(store)
    clock.advance(1.0)
    # the one re-read after subscribing (notices before it may have been missed)
    guard.get_current_price("BTC-USD")
    observer = redis.Redis.from_url(redis_server.url)
    before = _commandstats(observer)
    for _ in range(2_000):
        clock.advance(0.01)  # 20 simulated seconds: about twenty refreshes
        assert guard.get_current_price("BTC-USD") == 50_000.0
    after = _commandstats(observer)
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert set(changed) <= {"cmdstat_info"}, changed  # only this test's own INFO


def test_trading_goes_on_through_a_cut_link_and_counts_are_replayed(
    make_redis_store: Make, redis_server: Any
) -> None:
    link = TcpLink(redis_server.port)
    try:
        clock = FakeClock()
        store = make_redis_store(url=link.url(), max_retry_delay=0.2)
        guard, paper = make_guard(store, clock, symbol_freeze={"failure_threshold": 3})
        observer = make_redis_store()
        guard.freeze_manager.freeze("ETH-USD", "operator")
        subscribed(store)

        link.cut()
        assert guard.get_current_price("BTC-USD") == 50_000.0  # the trading loop keeps working
        with pytest.raises(SymbolFrozenError):  # the last known freezes still hold
            guard.place_market_order("ETH-USD", "buy", 1.0)
        fail_price_calls(guard, "LUNA-USD", 3)  # frozen in this process during the outage
        with pytest.raises(SymbolFrozenError):
            guard.place_market_order("LUNA-USD", "buy", 1.0)
        assert paper.orders == []
        health = guard.health()
        assert not health["ok"] and any(
            "Persistence degraded" in a and "unreachable" in a for a in health["alerts"]
        )

        link.heal()
        assert store.wait_until(lambda s: s.health().ok, timeout=10)
        state = observer.read("symbol_freeze")
        # replayed for the fleet
        assert state["failures"]["LUNA/USD"]["count"] == 3 and "LUNA/USD" in state["frozen"]
        clock.advance(1.0)
        assert guard.health()["ok"]
        with pytest.raises(SymbolFrozenError):
            guard.get_current_price("LUNA-USD")
    finally:
        link.close()


def test_a_guard_rides_through_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        clock = FakeClock()
        with RedisStore(server.url, prefix="fleet", max_retry_delay=0.2) as store:
            guard, paper = make_guard(store, clock)
            fail_price_calls(guard, "LUNA-USD", 1)
            server.stop()
            fail_price_calls(guard, "LUNA-USD", 2)  # the third failure freezes it, in memory
            assert guard.get_current_price("BTC-USD") == 50_000.0
            with pytest.raises(SymbolFrozenError):
                guard.place_market_order("LUNA-USD", "buy", 1.0)
            server.start()
            assert store.wait_until(lambda s: s.health().ok, timeout=15)
            clock.advance(1.0)
            assert guard.freeze_manager.is_frozen("LUNA-USD") and guard.health()["ok"]
            assert paper.orders == []
        with RedisStore(server.url, prefix="fleet") as fresh:  # a worker started after the restart
            assert "LUNA/USD" in fresh.read("symbol_freeze")["frozen"]
    finally:
        server.stop()


# -- the operator's CLI on a Redis deployment ------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_the_cli_acts_on_the_fleet(
    make_redis_store: Make, redis_server: Any, redis_prefix: str, capsys: Any
) -> None:
    clock = FakeClock()
    store = make_redis_store()
    guard, _ = make_guard(store, clock)
    subscribed(store)
    where = ("--store", redis_server.url, "--store-prefix", redis_prefix)
    assert run(capsys, *where, "freeze", "SOL-USD", "--reason", "halted")[0] == 0
    assert store.wait_until(
        lambda s: "SOL/USD" in s.read("symbol_freeze").get("frozen", {}), timeout=5
    )
    clock.advance(1.0)
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("SOL-USD")
    code, status = run(capsys, *where, "status")
    assert (
        code == 0
        and status["frozen"]["SOL-USD"]["reason"] == "halted"
        and status["persistence"]["ok"]
    )
    assert redis_prefix in status["persistence"]["location"]

    # another process, configured by the environment as a fleet's cron job would be
    done = subprocess.run(
        [sys.executable, "-m", "broker_guard.cli", "unfreeze", "SOL-USD", "--reason", "resumed"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "BROKER_GUARD_STORE_URL": redis_server.url,
            "BROKER_GUARD_STORE_PREFIX": redis_prefix,
            "PATH": "/usr/bin:/bin",
        },
    )
    assert done.returncode == 0, done.stderr
    assert store.wait_until(
        lambda s: "SOL/USD" not in s.read("symbol_freeze").get("frozen", {}), timeout=5
    )
    clock.advance(1.0)
    assert guard.get_current_price("SOL-USD") == 100.0  # unfrozen by the operator's cron job


def test_the_cli_fails_loudly_when_redis_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RedisServer(tmp_path / "redis")  # never started: nothing listens on its port
    for command in (["unfreeze", "SOL-USD"], ["freeze", "SOL-USD"], ["status"]):
        code = main(["--store", server.url, *command])
        err = capsys.readouterr().err
        assert code == 1, command
        assert "unreachable" in err and "nothing was changed" in err, err
