"""`broker-guard health` from the shared state alone: every bot's heartbeat, no --broker.

The bots here are real guards on a data dir (one in another process); the CLI
reads their heartbeats with its clock injected, so "within the heartbeat
interval" and "not seen for 10 minutes" are simulated, never waited for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker, JsonFileStore
from broker_guard.cli import main
from broker_guard.guard.heartbeat import STATE
from broker_guard.testing import FakeClock, PaperBroker

INTERVAL = 30.0


def health(capsys: pytest.CaptureFixture[str], data_dir: str, at: float, *more: str) -> Any:
    code = main(["health", "--json", "--data-dir", data_dir, *more], clock=lambda: at)
    return code, json.loads(capsys.readouterr().out)


def bot(data_dir: str, clock: FakeClock, name: str | None = None) -> tuple[Any, PaperBroker]:
    broker = PaperBroker(prices={"BTC-USD": 50_000.0}, cash=1000.0)
    config = GuardConfig.load(
        env={}, data_dir=data_dir, guard={"heartbeat_seconds": INTERVAL, "name": name}
    )
    return GuardedBroker(broker, config, clock=clock, sleep=clock.sleep), broker


def test_a_failing_balance_alerts_within_the_heartbeat_interval_and_clears_after_recovery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    clock = FakeClock(time.time())
    guard, broker = bot(d, clock)
    assert guard.get_account_balance() == 1000.0
    code, ok = health(capsys, d, clock())
    assert code == 0 and ok["ok"] is True, ok["alerts"]
    assert ok["bots"][guard.account]["balance"]["consecutive_errors"] == 0

    broker.fail_next("get_account_balance", 1000, "network")
    failed_at = clock()
    assert guard.get_account_balance() == 1000.0  # served from the fallback after 3 attempts
    code, alert = health(capsys, d, failed_at + INTERVAL)
    assert code == 1 and alert["ok"] is False
    assert any("balance failing, 3 consecutive errors" in a for a in alert["alerts"])
    check = next(c for c in alert["checks"] if c["check"] == f"{guard.account}: balance")
    assert check["ok"] is False and "Network error" in check["why"]
    assert alert["bots"][guard.account]["balance"]["fallback_in_use"] is True

    broker._scheduled.clear()  # the broker recovers
    clock.advance(60)
    assert guard.get_account_balance() == 1000.0
    code, again = health(capsys, d, clock())
    assert code == 0 and again["ok"] is True, again["alerts"]
    assert again["bots"][guard.account]["balance"]["fallback_in_use"] is False


def test_a_stopped_bot_is_reported_not_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real bot process starts, trades a little, and exits: seen while fresh, "not seen" once
    its heartbeat is older than guard.not_seen_minutes (or --not-seen), until forgotten."""
    d = str(tmp_path)
    script = textwrap.dedent(
        f"""
        from broker_guard import GuardConfig, GuardedBroker
        from broker_guard.testing import PaperBroker
        config = GuardConfig.load(env={{}}, data_dir={d!r}, guard={{"name": "momentum-bot"}})
        guard = GuardedBroker(PaperBroker(prices={{"BTC-USD": 50000.0}}), config)
        guard.get_account_balance()
        guard.get_current_price("BTC-USD")
        """
    )
    stopped = time.time()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    code, fresh = health(capsys, d, stopped + 60)
    assert code == 0 and fresh["bots"]["momentum-bot"]["pid"] != 0
    code, gone = health(capsys, d, stopped + 11 * 60)
    assert code == 1
    assert [a for a in gone["alerts"] if "momentum-bot: not seen for" in a]
    code, tighter = health(capsys, d, stopped + 6 * 60, "--not-seen", "5m")
    assert code == 1 and tighter["not_seen_seconds"] == 300

    assert main(["forget", "momentum-bot", "--data-dir", d, "--reason", "retired"]) == 0
    assert "forgotten" in capsys.readouterr().out
    code, empty = health(capsys, d, stopped + 11 * 60)
    assert code == 1 and "no guard has written a heartbeat" in empty["alerts"][0]
    operator = JsonFileStore(d).read_lines("operator")
    assert operator[-1]["action"] == "forget" and "retired" in operator[-1]["reason"]


def test_two_bots_one_failing_names_the_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    clock = FakeClock(time.time())
    good, _ = bot(d, clock, name="good")
    bad, broker = bot(d, clock, name="bad")
    good.get_account_balance()
    broker.fail_next("get_account_balance", 3, "network")
    with pytest.raises(Exception, match="unavailable"):
        bad.get_account_balance()  # no balance ever known: nothing to fall back on
    code, result = health(capsys, d, clock())
    assert code == 1 and set(result["bots"]) == {"good", "bad"}
    failed = [c["check"] for c in result["checks"] if not c["ok"]]
    assert failed == ["bad: balance"]


def test_health_with_no_bot_on_the_state_is_not_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing data dir no bot writes to (the wrong one, or bots without heartbeats) is not
    a false OK for cron."""
    code, result = health(capsys, str(tmp_path), time.time())
    assert code == 1 and result["checks"][-1]["check"] == "bots"


@pytest.mark.parametrize(
    "record",
    [
        "not a record",
        {"name": "x"},
        {"seen_at": "yesterday"},
        {"seen_at": None},
        {"seen_at": True},
        {"seen_at": 1.0, "balance": "broken"},
        {"seen_at": 1.0, "balance": {"consecutive_errors": "many", "fallback_in_use": True}},
    ],
    ids=repr,
)
def test_a_wrong_shaped_heartbeat_is_reported_not_crashed_on(
    record: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = JsonFileStore(tmp_path)
    store.update(STATE, lambda data: data.setdefault("bots", {}).update(odd=record))
    code, result = health(capsys, str(tmp_path), 100.0)
    assert code in (0, 1) and "odd" in result["bots"]
    assert [c for c in result["checks"] if c["check"].startswith("odd")]
    if not isinstance(record, dict) or not isinstance(record.get("seen_at"), float):
        assert code == 1 and any("odd" in a for a in result["alerts"])


def test_the_clis_own_guard_writes_no_heartbeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dust and normalize run a guard in the CLI's process: it is not a bot, and a heartbeat of
    it would be reported "not seen" once the command exits."""
    d = str(tmp_path)
    assert main(["dust", "--data-dir", d]) == 0
    assert main(["normalize", "--data-dir", d]) == 0
    capsys.readouterr()
    assert JsonFileStore(d).read(STATE) == {}


def test_health_output_without_json_lists_every_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    clock = FakeClock(time.time())
    guard, _ = bot(d, clock, name="alpha")
    guard.get_account_balance()
    assert main(["health", "--data-dir", d], clock=clock) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "OK" and any(line.startswith("ok    alpha: seen") for line in out)


def test_a_heartbeat_from_beyond_the_clock_tolerance_is_an_alert_not_seen_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bot whose clock runs 10 minutes ahead: its heartbeat's age is unknown, and a stopped bot
    must not pass as "seen now" until the reader's clock catches up."""
    d = str(tmp_path)
    now = time.time()
    guard, _ = bot(d, FakeClock(now + 600))
    guard.get_account_balance()
    code, result = health(capsys, d, now)
    assert code == 1
    assert any("ahead of this clock" in a and "NTP" in a for a in result["alerts"])
    code, within = health(capsys, d, now + 600 - 30)  # within the 60 s tolerance: seen
    assert code == 0, within["alerts"]
