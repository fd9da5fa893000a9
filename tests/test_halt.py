"""The fleet-wide halt: an operator (or an automatic trigger) stops every entry on every symbol for
every guard sharing the state, files or Redis; exits, prices and balances still pass; status,
health and events say who halted, when and why, until someone resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import fail_price_calls

from broker_guard import (
    GuardConfig,
    GuardedBroker,
    GuardEvent,
    GuardRefusedError,
    JsonFileStore,
    MemoryStore,
    StoreError,
    TradingHaltedError,
)
from broker_guard.cli import main
from broker_guard.testing import FakeClock, PaperBroker

PRICES = {"BTC-USD": 50_000.0, "ETH-USD": 2_500.0, "SOL-USD": 100.0}
for _i in range(8):
    PRICES[f"C{_i}-USD"] = 1.0


def guard_on(
    store: Any, clock: FakeClock, events: list[GuardEvent] | None = None, **cfg: Any
) -> Any:
    paper = PaperBroker(prices=PRICES, positions={"ETH-USD": 1.0}, cash=10_000.0)
    config = GuardConfig.load(env={}, **cfg)
    hook = events.append if events is not None else None
    return GuardedBroker(paper, config, store=store, clock=clock, sleep=clock.sleep, on_event=hook)


def cli(*argv: str) -> tuple[int, Any]:
    """The CLI in a process of its own, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "broker_guard.cli", "--json", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else done.stderr


GUARD_SCRIPT = """
import json, sys
from broker_guard import GuardConfig, GuardedBroker, GuardRefusedError, JsonFileStore
from broker_guard.testing import PaperBroker
store_args = json.loads(sys.argv[1])
if "url" in store_args:
    from broker_guard import RedisStore
    store = RedisStore(store_args["url"], prefix=store_args["prefix"])
else:
    store = JsonFileStore(store_args["dir"])
paper = PaperBroker(prices={"BTC-USD": 50000.0, "ETH-USD": 2500.0}, positions={"ETH-USD": 1.0})
guard = GuardedBroker(paper, GuardConfig.load(env={}), store=store)
out = {}
for side, symbol in (("buy", "BTC-USD"), ("sell", "ETH-USD")):
    try:
        guard.place_market_order(symbol, side, 0.001)
        out[side] = "placed"
    except GuardRefusedError as exc:
        out[side] = type(exc).__name__
out["price"] = guard.get_current_price("BTC-USD")
out["orders"] = len(paper.orders)
if "halt" in sys.argv[2:]:
    guard.halt("halted from a bot process")
print(json.dumps(out))
store.close() if hasattr(store, "close") else None
"""


def bot(store_args: dict[str, str], *extra: str) -> dict[str, Any]:
    """A bot in a process of its own: tries a buy and a sell, reads a price."""
    done = subprocess.run(
        [sys.executable, "-c", GUARD_SCRIPT, json.dumps(store_args), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(params=["files", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """How a store, a bot process and the CLI reach the same state: files or Redis."""
    if request.param == "files":
        return (
            lambda: JsonFileStore(tmp_path),
            {"dir": str(tmp_path)},
            ["--data-dir", str(tmp_path)],
        )
    make = request.getfixturevalue("make_redis_store")
    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    return (
        make,
        {"url": server.url, "prefix": prefix},
        ["--store", server.url, "--store-prefix", prefix],
    )


def test_a_cli_halt_stops_entries_in_every_process_and_exits_prices_balances_pass(
    shared: Any,
) -> None:
    make_store, store_args, where = shared
    clock = FakeClock()
    events: list[GuardEvent] = []
    guard = guard_on(make_store(), clock, events)
    if "url" in store_args:  # following the state's notices before the CLI changes it
        assert guard.guard_context.store.wait_until(lambda s: s.version("symbol_freeze")[0] >= 1)
    assert bot(store_args)["buy"] == "placed"

    code, out = cli(*where, "halt", "--reason", "exchange incident")
    assert code == 0 and out["changed"] is True and out["halt"]["reason"] == "exchange incident"
    clock.advance(1.0)  # the next refresh
    if "url" in store_args:
        assert guard.guard_context.store.wait_until(
            lambda s: s.version("symbol_freeze")[1] >= 1, timeout=5
        )
    with pytest.raises(TradingHaltedError, match="exchange incident") as refused:
        guard.place_market_order("BTC-USD", "buy", 0.001)
    assert isinstance(refused.value, GuardRefusedError)
    assert guard.place_market_order("ETH-USD", "sell", 0.5)["status"] == "filled"  # an exit
    assert guard.get_current_price("BTC-USD") == 50_000.0
    assert guard.get_account_balance() > 0
    health = guard.health()
    assert not health["ok"] and any("halted" in a for a in health["alerts"])
    assert health["halted"]["reason"] == "exchange incident" and "@" in health["halted"]["by"]
    assert [e.kind for e in events if e.kind == "refused"] == ["refused"]

    other = bot(store_args)  # another bot process
    assert other["buy"] == "TradingHaltedError" and other["sell"] == "placed"
    assert other["price"] == 50_000.0 and other["orders"] == 1

    code, status = cli(*where, "status")
    assert status["halted"]["reason"] == "exchange incident"
    code, out = cli(*where, "resume", "--reason", "exchange confirmed healthy")
    assert code == 0 and out == {"action": "resume", "changed": True}
    code, out = cli(*where, "resume", "--reason", "again")
    assert code == 0 and out["changed"] is False  # says there was nothing to change
    assert bot(store_args)["buy"] == "placed"
    clock.advance(1.0)
    if "url" in store_args:
        assert guard.guard_context.store.wait_until(
            lambda s: s.version("symbol_freeze")[1] >= 2, timeout=5
        )
    guard.place_market_order("BTC-USD", "buy", 0.001)


def test_a_halt_made_by_a_bot_reaches_the_cli_and_other_bots(shared: Any) -> None:
    make_store, store_args, where = shared
    bot(store_args, "halt")
    code, status = cli(*where, "status")
    assert code == 0 and status["halted"]["reason"] == "halted from a bot process"
    guard = guard_on(make_store(), FakeClock())
    with pytest.raises(TradingHaltedError):
        guard.place_market_order("SOL-USD", "buy", 0.1)
    code, health = cli(*where, "health")
    assert code == 1 and any("Trading halted" in a for a in health["alerts"])


def test_halt_and_resume_need_a_reason_and_record_who(tmp_path: Path) -> None:
    guard = guard_on(JsonFileStore(tmp_path), FakeClock())
    with pytest.raises(ValueError, match="reason"):
        guard.halt("  ")
    record = guard.halt("manual test")
    assert record["by"] and record["at"].endswith("+00:00") and record["auto"] is False
    with pytest.raises(ValueError, match="reason"):
        guard.resume("")
    assert guard.resume("checked") is True
    saved = JsonFileStore(tmp_path).read("symbol_freeze")["halt"]
    assert "trading" not in saved and saved["last_resume"]["reason"] == "checked"
    with pytest.raises(SystemExit) as usage:  # --reason is required
        main(["--data-dir", str(tmp_path), "halt"])
    assert usage.value.code == 2


def test_halt_while_a_symbol_is_frozen_still_lets_its_exits_through(tmp_path: Path) -> None:
    guard = guard_on(JsonFileStore(tmp_path), FakeClock())
    guard.freeze_manager.freeze("ETH-USD", "review")
    guard.halt("incident")
    assert guard.place_market_order("ETH-USD", "sell", 1.0)["status"] == "filled"
    with pytest.raises(TradingHaltedError):
        guard.place_market_order("ETH-USD", "buy", 0.1)


def test_a_damaged_halt_record_still_halts(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.update("symbol_freeze", lambda doc: doc.update(halt={"trading": {"reason": 5}}))
    guard = guard_on(JsonFileStore(tmp_path), FakeClock())
    with pytest.raises(TradingHaltedError, match="damaged halt record"):
        guard.place_market_order("BTC-USD", "buy", 0.001)
    assert any("halt" in a for a in guard.health()["alerts"])
    assert guard.resume("reviewed the damaged record")
    guard.place_market_order("BTC-USD", "buy", 0.001)


# -- automatic halts -------------------------------------------------------------------------


def test_the_balance_failing_n_times_in_a_row_halts_when_configured(tmp_path: Path) -> None:
    clock = FakeClock()
    events: list[GuardEvent] = []
    guard = guard_on(
        JsonFileStore(tmp_path),
        clock,
        events,
        halt={"after_balance_failures": 5},
        balance={"max_attempts": 3},
    )
    guard.get_account_balance()
    paper = guard.__wrapped__
    paper.fail_next("get_account_balance", 3, "network")
    guard.get_account_balance()  # 3 failures, the last known balance
    guard.place_market_order("BTC-USD", "buy", 0.001)  # not yet
    paper.fail_next("get_account_balance", 2, "network")
    guard.get_account_balance()  # 5 in a row: halted, then the third attempt succeeds
    with pytest.raises(TradingHaltedError, match="failed 5 times in a row"):
        guard.place_market_order("BTC-USD", "buy", 0.001)
    halt = [e for e in events if e.kind == "halt"]
    assert len(halt) == 1 and halt[0].detail["auto"] is True
    assert guard.get_account_balance() > 0  # a success does not resume: an operator does


def test_many_symbols_frozen_within_the_window_halt_when_configured(tmp_path: Path) -> None:
    clock = FakeClock()
    guard = guard_on(
        JsonFileStore(tmp_path),
        clock,
        halt={"after_freezes": 3, "freeze_window_minutes": 10},
    )
    paper = guard.__wrapped__
    for name in ("C0-USD", "C1-USD"):
        paper.delist(name)
        fail_price_calls(guard, name)
    clock.advance(11 * 60)  # outside the window: two old freezes and one new are not a burst
    paper.delist("C2-USD")
    fail_price_calls(guard, "C2-USD")
    guard.place_market_order("BTC-USD", "buy", 0.001)
    guard.freeze_manager.freeze("C3-USD", "operator freezes are not the guard's")
    guard.place_market_order("BTC-USD", "buy", 0.001)
    for name in ("C4-USD", "C5-USD"):
        paper.delist(name)
        fail_price_calls(guard, name)
    with pytest.raises(TradingHaltedError, match="3 symbols frozen within 10 min"):
        guard.place_market_order("BTC-USD", "buy", 0.001)


def test_an_automatic_halt_never_replaces_the_operators(tmp_path: Path) -> None:
    guard = guard_on(JsonFileStore(tmp_path), FakeClock(), halt={"after_balance_failures": 1})
    guard.halt("operator: maintenance window")
    guard.__wrapped__.fail_next("get_account_balance", 1, "network")
    guard.get_account_balance()
    assert guard.health()["halted"]["reason"] == "operator: maintenance window"


def test_automatic_halts_are_off_by_default(tmp_path: Path) -> None:
    guard = guard_on(JsonFileStore(tmp_path), FakeClock())
    paper = guard.__wrapped__
    guard.get_account_balance()
    for _ in range(5):
        paper.fail_next("get_account_balance", 3, "network")
        guard.get_account_balance()
    for i in range(6):
        paper.delist(f"C{i}-USD")
        fail_price_calls(guard, f"C{i}-USD")
    guard.place_market_order("BTC-USD", "buy", 0.001)
    assert guard.health()["halted"] is None


def test_halt_settings_come_from_the_environment_and_are_checked() -> None:
    env = {"TRADING_HALT_AFTER_BALANCE_FAILURES": "6", "TRADING_HALT_AFTER_FREEZES": "4"}
    config = GuardConfig.load(env=env)
    assert config.halt.after_balance_failures == 6 and config.halt.after_freezes == 4
    with pytest.raises(ValueError, match="after_freezes"):
        GuardConfig.load(env={}, halt={"after_freezes": 0})


def test_an_order_whose_symbol_the_guard_cannot_read_still_meets_the_halt(tmp_path: Path) -> None:
    """Review finding: an order method naming its symbol otherwise (``ticker=``, an order object)
    passed while halted: the halt refuses every entry, named or not."""
    from broker_guard import MethodSpec

    class Vendor:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def submit_order(self, order_data: Any) -> str:
            self.sent.append(order_data)
            return "accepted"

    vendor = Vendor()
    spec = MethodSpec("order", symbol="symbol", side="side")
    guard = GuardedBroker(
        vendor,
        GuardConfig.load(env={}),
        store=JsonFileStore(tmp_path),
        profile={"submit_order": spec},
        clock=FakeClock(),
    )
    assert guard.submit_order({"ticker": "BTC-USD", "side": "buy"}) == "accepted"  # not halted
    guard.halt("incident")
    with pytest.raises(TradingHaltedError):
        guard.submit_order({"ticker": "BTC-USD", "side": "buy"})
    assert len(vendor.sent) == 1


class RefusingStore(MemoryStore):
    """A store that refuses writes while ``refusing`` (a Redis out of memory, a read-only
    replica) and, like any store after a reconnect, can be made to hand back whole documents."""

    refusing = False
    whole = False

    def update(self, name: str, mutate: Any, **kwargs: Any) -> Any:
        if self.refusing:
            raise StoreError(f"state {name!r} not saved: OOM command not allowed")
        return super().update(name, mutate, **kwargs)

    def changes(self, name: str, since: Any) -> Any:
        return None if self.whole else super().changes(name, since)


def test_a_halt_the_store_refuses_stays_in_force_here_and_is_shared_once_the_store_takes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = RefusingStore()
    guard, other = guard_on(store, clock), guard_on(store, clock)
    store.refusing = True
    guard.halt("exchange incident")
    assert "THIS PROCESS ONLY" in caplog.text
    store.whole = True  # the next refresh re-reads everything, which has no halt
    clock.advance(5)
    with pytest.raises(TradingHaltedError):
        guard.place_market_order("BTC-USD", "buy", 0.01)
    assert guard.freeze_manager.get_stats()["halted"]
    store.refusing = store.whole = False
    clock.advance(5)
    with pytest.raises(TradingHaltedError):  # written at the refresh, now every guard sees it
        guard.place_market_order("BTC-USD", "buy", 0.01)
    with pytest.raises(TradingHaltedError):
        other.place_market_order("BTC-USD", "buy", 0.01)
    assert guard.resume("checked")
    clock.advance(5)
    other.place_market_order("BTC-USD", "buy", 0.01)
    guard.place_market_order("BTC-USD", "buy", 0.01)


def test_resuming_a_halt_only_this_process_had_lifts_it_before_any_refresh() -> None:
    clock = FakeClock()
    store = RefusingStore()
    guard = guard_on(store, clock)
    store.refusing = True
    guard.halt("exchange incident")
    store.refusing = False  # the store is back; no refresh has run yet
    assert guard.resume("checked") is True
    clock.advance(5)
    guard.place_market_order("BTC-USD", "buy", 0.01)
