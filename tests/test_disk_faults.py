"""Disk faults under a running guard: the trading loop keeps working, nothing persisted is lost,
health says what is wrong."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import filelock
import pytest
from helpers import fail_price_calls

from broker_guard import GuardConfig, GuardedBroker, JsonFileStore, SymbolFrozenError
from broker_guard.testing import FakeClock, PaperBroker


def file_guard(
    tmp_path: Path, clock: FakeClock, lock_timeout: float = 5.0, **broker: Any
) -> tuple[Any, PaperBroker]:
    paper = PaperBroker(prices={"BTC-USD": 50_000.0, "ETH-USD": 2_500.0}, cash=1_000.0, **broker)
    paper.delist("OLD-USD")
    config = GuardConfig.load(
        env={}, data_dir=str(tmp_path), guard={"refresh_interval_seconds": 0.0}
    )
    store = JsonFileStore(tmp_path, lock_timeout=lock_timeout, clock=clock)
    guard = GuardedBroker(paper, config, store=store, clock=clock, sleep=clock.sleep)
    return guard, paper


def test_disk_full_keeps_trading_and_replays_when_space_returns(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard, _ = file_guard(tmp_path, clock)
    guard.get_account_balance()
    fail_price_calls(guard, "OLD-USD", 1)
    real_fsync = os.fsync

    def no_space(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("broker_guard.state.files.os.fsync", no_space)
    fail_price_calls(guard, "OLD-USD", 2)  # the third failure freezes, in memory
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("OLD-USD")
    assert guard.get_current_price("BTC-USD") == 50_000.0 and guard.get_account_balance() == 1_000.0
    health = guard.health()
    assert not health["ok"] and any("No space left" in a for a in health["alerts"])
    monkeypatch.setattr("broker_guard.state.files.os.fsync", real_fsync)
    # the next write replays what was kept in memory
    guard.freeze_manager.freeze("ETH-USD", "operator")
    on_disk = JsonFileStore(tmp_path).read("symbol_freeze")
    assert {"OLD/USD", "ETH/USD"} <= set(on_disk["frozen"])
    assert guard.health()["persistence"]["ok"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not an object", "deep"])
def test_a_damaged_snapshot_is_rebuilt_without_losing_the_last_change(
    tmp_path: Path, clock: FakeClock, damage: str
) -> None:
    guard, _ = file_guard(tmp_path, clock)
    fail_price_calls(guard, "OLD-USD", 3)
    guard.guard_context.store.compact("symbol_freeze")
    guard.freeze_manager.freeze("ETH-USD", "operator")
    guard.guard_context.store.compact("symbol_freeze")  # the snapshot holds both freezes
    guard.freeze_manager.freeze("SOL-USD", "operator")  # the last acknowledged change
    path = tmp_path / "symbol_freeze.snapshot.json"
    text = path.read_text()
    path.write_text(
        {
            "truncated": text[: len(text) // 2],
            "garbage": "\x00\xff{{{",
            "empty": "",
            "not an object": "[1, 2]",
            "deep": "[" * 100_000 + "]" * 100_000,
        }[damage]
    )

    fresh, _ = file_guard(tmp_path, clock)
    for symbol in ("OLD-USD", "ETH-USD", "SOL-USD"):  # every freeze survived, the last one too
        with pytest.raises(SymbolFrozenError):
            fresh.get_current_price(symbol)
    assert fresh.get_current_price("BTC-USD") == 50_000.0
    health = fresh.health()
    assert health["persistence"]["recovered"] and any("restored" in a for a in health["alerts"])
    # kept for a post-mortem
    assert any(
        p.name.startswith("symbol_freeze.snapshot.json.corrupt-") for p in tmp_path.iterdir()
    )


def test_a_stale_lock_file_left_by_a_dead_process_does_not_block(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "symbol_freeze.json.lock").write_text("12345")  # a lock file, not a held lock
    guard, _ = file_guard(tmp_path, clock, lock_timeout=0.2)
    fail_price_calls(guard, "OLD-USD", 3)
    assert guard.freeze_manager.is_frozen("OLD-USD") and guard.health()["ok"]


def test_a_lock_that_cannot_be_taken_in_time_does_not_stop_the_trading_loop(
    tmp_path: Path, clock: FakeClock
) -> None:
    guard, _ = file_guard(tmp_path, clock, lock_timeout=0.05)
    guard.freeze_manager.freeze("SOL-USD", "operator")  # the state file exists
    other = filelock.FileLock(tmp_path / "symbol_freeze.json.lock")
    with other:  # another process holds the freeze state's lock past the timeout
        clock.advance(1)  # a reload is due: it reads without the lock
        # served; no StoreLockTimeoutError into the loop
        assert guard.get_current_price("BTC-USD") == 50_000.0
        fail_price_calls(guard, "OLD-USD", 3)  # failures are counted in memory meanwhile
        with pytest.raises(SymbolFrozenError):
            guard.get_current_price("OLD-USD")
        health = guard.health()
        assert not health["ok"] and any("locked" in a for a in health["alerts"])
    guard.freeze_manager.freeze("ETH-USD", "operator")  # lock free again: state reaches disk
    assert guard.health()["ok"], guard.health()["alerts"]


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root ignores directory permissions; the disk-full test covers the same path",
)
def test_read_only_data_dir(tmp_path: Path, clock: FakeClock) -> None:
    guard, _ = file_guard(tmp_path, clock)
    guard.get_current_price("BTC-USD")
    tmp_path.chmod(0o500)
    try:
        fail_price_calls(guard, "OLD-USD", 3)
        assert guard.freeze_manager.is_frozen("OLD-USD") and not guard.health()["ok"]
    finally:
        tmp_path.chmod(0o700)


def test_a_lock_held_by_a_stopped_process_never_stalls_a_price_call(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard, _ = file_guard(tmp_path, clock, lock_timeout=30.0)
    guard.freeze_manager.freeze("SOL-USD", "operator")
    waits: list[float] = []
    real_acquire = filelock.FileLock.acquire

    def spy(self: Any, timeout: float | None = None, *args: Any, **kwargs: Any) -> Any:
        waits.append(30.0 if timeout is None else timeout)
        return real_acquire(self, timeout, *args, **kwargs)

    monkeypatch.setattr(filelock.FileLock, "acquire", spy)
    stopped = filelock.FileLock(tmp_path / "symbol_freeze.json.lock")
    with stopped:  # a bot stopped (SIGSTOP) while holding the lock
        waits.clear()
        fail_price_calls(guard, "OLD-USD", 3)  # counted and frozen, in memory
        with pytest.raises(SymbolFrozenError):
            guard.get_current_price("OLD-USD")
        assert max(waits) <= 0.05, f"a price call waited {max(waits)}s for the lock"
        assert guard.get_current_price("BTC-USD") == 50_000.0
    # the lock is free: the next change writes everything kept in memory
    guard.freeze_manager.record_price_fetch_failure("ETH-USD", "symbol not found")
    on_disk = JsonFileStore(tmp_path).read("symbol_freeze")
    assert "OLD/USD" in on_disk["frozen"] and on_disk["failures"]["OLD/USD"]["count"] == 3
    assert on_disk["failures"]["ETH/USD"]["count"] == 1 and guard.health()["ok"]


def test_a_bot_that_loses_read_access_alerts_and_refuses_entries(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard, _ = file_guard(tmp_path, clock)
    guard.freeze_manager.freeze("SOL-USD", "operator")
    assert guard.place_market_order("BTC-USD", "buy", 0.001)
    JsonFileStore(tmp_path).compact("symbol_freeze")  # new files, as root's CLI would write them
    real_open = os.open

    def denied(path: Any, *args: Any, **kwargs: Any) -> int:
        if "symbol_freeze." in str(path) and not str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("broker_guard.state.files.os.open", denied)
    clock.advance(2.0)
    assert guard.get_current_price("BTC-USD") == 50_000.0  # prices still answered
    with pytest.raises(SymbolFrozenError, match="cannot be read"):
        guard.place_market_order("BTC-USD", "buy", 0.001)  # cannot confirm: refused
    assert guard.place_market_order("BTC-USD", "sell", 0.001)  # exits pass
    health = guard.health()
    assert not health["ok"] and any("cannot read" in a for a in health["alerts"]), health
    monkeypatch.setattr("broker_guard.state.files.os.open", real_open)
    clock.advance(2.0)
    assert guard.place_market_order("BTC-USD", "buy", 0.001)  # readable again: decided by it


def _damage_naming_nothing(tmp_path: Path) -> None:
    """A journal line so damaged its JSON names no record (it may have held a freeze)."""
    with open(tmp_path / "symbol_freeze.journal", "ab") as handle:
        handle.write(b'{"crc":"0badf00d","seq":99,"set":[[["froz\x00\xff garbage\n')
        handle.write(b"")  # a later writer's line follows it: the damage is not a torn tail
    JsonFileStore(tmp_path).update(
        "symbol_freeze",
        lambda d: d.update(failures={"X/USD": {"count": 1}}),
        keys=[("failures", "X/USD")],
    )


def test_a_damaged_change_naming_no_symbol_refuses_entries_until_acknowledged(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker_guard.cli import main
    from broker_guard.errors import StateUnconfirmedError

    guard, paper = file_guard(tmp_path, clock)
    guard.freeze_manager.freeze("OLD-USD", "operator")
    _damage_naming_nothing(tmp_path)
    for bot in (guard, file_guard(tmp_path, clock)[0]):  # running, and started after
        with pytest.raises(StateUnconfirmedError, match="acknowledge-damage"):
            bot.place_market_order("ETH-USD", "buy", 0.01)
        health = bot.health()
        assert not health["ok"] and any("name no symbol" in a for a in health["alerts"])
    assert not [o for o in paper.orders if o["side"] == "buy"]
    paper.holdings["ETH"] = 1.0
    guard.place_market_order("ETH-USD", "sell", 0.5)  # exits pass
    assert main(["--data-dir", str(tmp_path), "acknowledge-damage"]) == 0
    assert "acknowledged 1" in capsys.readouterr().out
    guard.place_market_order("ETH-USD", "buy", 0.01)
    restarted = file_guard(tmp_path, clock)[0]  # the acknowledgement is durable
    restarted.place_market_order("ETH-USD", "buy", 0.01)
    with pytest.raises(SymbolFrozenError):
        restarted.place_market_order("OLD-USD", "buy", 0.01)  # the freeze from before is kept
    assert main(["--data-dir", str(tmp_path), "acknowledge-damage"]) == 0
    assert "no unattributed damage" in capsys.readouterr().out
