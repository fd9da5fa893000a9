from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers import start_bot

from broker_guard import GuardConfig, GuardedBroker, JsonFileStore, SymbolFrozenError
from broker_guard.cli import main
from broker_guard.testing import FakeClock, PaperBroker


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_freeze_status_unfreeze_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    assert run(capsys, "--data-dir", d, "freeze", "LUNA-USD", "--reason", "delisted")[0] == 0
    code, status = run(capsys, "--data-dir", d, "status")
    assert code == 0 and status["frozen"]["LUNA-USD"]["reason"] == "delisted"  # type: ignore[index]
    code, out = run(capsys, "--data-dir", d, "unfreeze", "LUNA-USD", "--reason", "relisted")
    assert code == 0 and out == {"symbol": "LUNA-USD", "action": "unfreeze", "changed": True}
    assert run(capsys, "--data-dir", d, "restrict", "XYZ-USD")[0] == 0
    status = run(capsys, "--data-dir", d, "status")[1]
    assert "XYZ/USD" in status["restricted"]  # type: ignore[index]


def test_dust_normalize_and_health_on_paper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    code, dust = run(capsys, "--data-dir", d, "dust", "--dry-run")
    assert code == 0 and dust["total_found"] == 2 and dust["closed"] == 0  # type: ignore[index]
    code, norm = run(capsys, "--data-dir", d, "normalize")
    assert code == 0 and norm["dry_run"] is True  # type: ignore[index]
    assert norm["actions_required"] == 4  # type: ignore[index]
    start_bot(d)
    code, health = run(capsys, "--data-dir", d, "health")
    assert code == 0 and health["ok"] is True  # type: ignore[index]
    run(capsys, "--data-dir", d, "freeze", "A-USD")
    Path(tmp_path, "cfg.json").write_text(json.dumps({"symbol_freeze": {"alert_frozen_count": 0}}))
    code, health = run(capsys, "--data-dir", d, "--config", str(tmp_path / "cfg.json"), "health")
    assert code == 1 and health["alerts"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broker", "nope", "dust"], "unknown broker spec"),
        (["--broker", "no_such_module:make", "normalize"], "cannot load broker"),
        (["freeze", "!!"], "bad symbol"),
        (["--data-dir", "/nonexistent/dir", "status"], "does not exist"),
    ],
)
def test_clear_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_ccxt_credentials_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ccxt")
    monkeypatch.delenv("BROKER_GUARD_API_KEY", raising=False)
    assert main(["--broker", "ccxt:kraken", "dust"]) == 2
    assert "BROKER_GUARD_API_KEY" in capsys.readouterr().err


def test_unfreeze_from_the_cli_reaches_a_guard_in_another_process(tmp_path: Path) -> None:
    clock = FakeClock()
    guard = GuardedBroker(
        PaperBroker(prices={"SOL-USD": 100.0}),
        GuardConfig.load(env={}),
        store=JsonFileStore(tmp_path),
        clock=clock,
        sleep=clock.sleep,
    )
    guard.freeze_manager.freeze("SOL-USD", "test")
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("SOL-USD")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_guard.cli",
            "--data-dir",
            str(tmp_path),
            "unfreeze",
            "SOL-USD",
            "--reason",
            "ok",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    clock.advance(1.0)  # within the one-second refresh interval
    assert guard.get_current_price("SOL-USD") == 100.0


def test_demo_runs_and_shows_all_four_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "demo"]) == 0
    out = capsys.readouterr().out
    for marker in (
        "USING FALLBACK BALANCE",
        "SYMBOL FROZEN: LUNA-USD",
        "DUST CLEANUP COMPLETE",
        "NORMALIZATION COMPLETE",
        "health: OK",
    ):
        assert marker in out, marker


def many_positions() -> PaperBroker:
    """A ``module:factory`` broker for the CLI: 60 positions, half of them dust."""
    prices = {f"A{i}-USD": 1.0 for i in range(60)}
    return PaperBroker(
        prices=prices, positions={s: 0.5 if i % 2 else 20.0 for i, s in enumerate(prices)}
    )


def test_long_scans_draw_progress_on_stderr_and_keep_stdout_for_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--json",
            "--data-dir",
            str(tmp_path),
            "--broker",
            "test_cli:many_positions",
            "dust",
            "--dry-run",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["dry_run_would_close"] == 30
    lines = captured.err.splitlines()
    # 0/10 .. 10/10 of the way, not one line per position
    assert "60/60 positions valued" in lines and len(lines) == 11


def test_short_scans_draw_no_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--json", "--data-dir", str(tmp_path), "dust", "--dry-run"])
    assert "positions valued" not in capsys.readouterr().err


def test_a_change_the_cli_could_not_save_is_an_error_not_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import filelock

    Path(tmp_path, "cfg.json").write_text(json.dumps({"guard": {"lock_timeout_seconds": 0.05}}))
    with filelock.FileLock(
        str(tmp_path / "symbol_freeze.json.lock")
    ):  # a hung bot holding the state
        code = main(
            [
                "--data-dir",
                str(tmp_path),
                "--config",
                str(tmp_path / "cfg.json"),
                "freeze",
                "SOL-USD",
            ]
        )
    captured = capsys.readouterr()
    assert code == 1 and "stayed locked" in captured.err and "done" not in captured.out
    assert not (tmp_path / "symbol_freeze.json").exists()  # nothing was written


def _run_as(uid: int | None, fn: Any) -> int:
    """``fn()`` in a forked child, as ``uid`` when given (the interpreter and every module are
    already loaded: the other user needs no access to them)."""
    import os
    import traceback

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            code = fn()
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
    reason="needs root: the CLI runs as root, the bot as another user",
)
def test_a_root_run_cli_change_reaches_a_bot_run_as_another_user() -> None:
    import os
    import shutil

    from broker_guard import GuardConfig, GuardedBroker, JsonFileStore, SymbolFrozenError
    from broker_guard.symbol_freeze_manager import SymbolFreezeManager, shipped_restricted_symbols
    from broker_guard.testing import PaperBroker

    shipped_restricted_symbols()  # its importlib modules load now, while root can read them
    bot_uid = 65534  # nobody
    data_dir = Path(tempfile.mkdtemp(prefix="bg-owner-"))
    os.chmod(data_dir, 0o700)
    os.chown(data_dir, bot_uid, bot_uid)
    config = GuardConfig.load(env={}, data_dir=str(data_dir))

    def bot_starts() -> int:
        manager = SymbolFreezeManager(store=JsonFileStore(data_dir))
        manager.record_price_fetch_failure("ADA-USD", "symbol not found")
        return 0 if manager.store.health().ok else 1

    def bot_trades() -> int:
        guard: Any = GuardedBroker(
            PaperBroker(prices={"SOL-USD": 100.0, "DOGE-USD": 0.1, "ETH-USD": 1.0}, cash=1e4),
            config,
            store=JsonFileStore(data_dir),
        )
        for symbol in ("SOL-USD", "DOGE-USD"):
            try:
                guard.place_market_order(symbol, "buy", 1.0)
                return 10  # the operator's change did not reach the bot
            except SymbolFrozenError:
                pass
            except Exception:
                pass  # restricted: refused too
        guard.freeze_manager.record_price_fetch_failure("ETH-USD", "symbol not found")
        return 0 if guard.health()["persistence"]["ok"] else 11

    try:
        assert _run_as(bot_uid, bot_starts) == 0
        for command in (["freeze", "SOL-USD"], ["restrict", "DOGE-USD"]):
            code = _run_as(None, lambda c=command: main(["--data-dir", str(data_dir), *c]))
            assert code == 0, command
        owners = {p.name: p.stat().st_uid for p in data_dir.iterdir()}
        assert set(owners.values()) == {bot_uid}, owners
        assert _run_as(bot_uid, bot_trades) == 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_freeze_for_and_until_and_status_say_who_why_and_when_probed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    assert run(capsys, "--data-dir", d, "freeze", "SOL-USD", "--reason", "legal hold")[0] == 0
    assert run(capsys, "--data-dir", d, "freeze", "ETH-USD", "--for", "2h")[0] == 0
    code = main(["--data-dir", d, "status"])
    text = capsys.readouterr().out
    assert code == 0 and "Trading: not halted" in text
    sol = next(line for line in text.splitlines() if "SOL-USD" in line)
    assert "frozen by " in sol and "@" in sol and "legal hold" in sol and "never probed" in sol
    eth = next(line for line in text.splitlines() if "ETH-USD" in line)
    assert "probed after 20" in eth
    status = run(capsys, "--data-dir", d, "status")[1]
    assert status["frozen"]["ETH-USD"]["cooldown_hours"] == 2.0  # type: ignore[index]
    assert status["frozen"]["SOL-USD"]["auto_unfreeze"] is False  # type: ignore[index]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--for", "soon"], "bad duration"),
        (["--for", "0h"], "bad duration"),
        (["--until", "2020-01-01T00:00+00:00"], "in the past"),
        (["--until", "2099-01-01T00:00"], "no offset"),
    ],
)
def test_bad_freeze_durations_are_usage_errors_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    code = main(["--data-dir", str(tmp_path), "freeze", "SOL-USD", *option])
    assert code == 2 and message in capsys.readouterr().err
    assert run(capsys, "--data-dir", str(tmp_path), "status")[1]["frozen"] == {}  # type: ignore[index]


def test_freeze_help_says_when_a_freeze_expires(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["freeze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Never expires unless given --for or --until" in text
