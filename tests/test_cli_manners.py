"""The CLI's manners: options anywhere, --version, python -m, no directory made by a typo, dust
dry-run by default with a question before real orders, broker failures as failures, every
change command saying what changed (or "no change"), reasons recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import start_bot

from broker_guard import JsonFileStore, __version__
from broker_guard.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out


def test_options_go_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    code, before = run(capsys, "--json", "--data-dir", d, "status")
    assert code == 0 and before["halted"] is None
    code, after = run(capsys, "status", "--json", "--data-dir", d)
    assert code == 0 and after == before
    start_bot(d)
    code, mixed = run(capsys, "--data-dir", d, "health", "--json")
    assert code == 0 and mixed["ok"] is True


def test_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"broker-guard {__version__}"
    shown = subprocess.run(
        [sys.executable, "-m", "broker_guard", "--version"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and __version__ in shown.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["health"],
        ["status"],
        ["freeze", "SOL-USD", "--reason", "x"],
        ["halt", "--reason", "x"],
        ["restrict", "SOL-USD"],
        ["dust"],
        ["normalize"],
    ],
    ids=lambda a: a[0],
)
def test_a_mistyped_data_dir_is_exit_2_and_never_created(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "dta"
    assert main(["--data-dir", str(typo), *argv]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not typo.exists()


def test_init_creates_the_data_dir_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "state"
    code, made = run(capsys, "--json", "--data-dir", str(d), "init")
    assert code == 0 and made["changed"] is True and d.is_dir()
    assert (d.stat().st_mode & 0o777) == 0o700
    code, again = run(capsys, "--data-dir", str(d), "init")
    assert code == 0 and "no change" in again


def test_dust_is_a_dry_run_unless_executed_and_asks_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(tmp_path)
    code, dry = run(capsys, "--json", "--data-dir", d, "dust")
    assert code == 0 and dry["dry_run"] is True and dry["closed"] == 0 and dry["total_found"] > 0
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["--data-dir", d, "dust", "--execute"]) == 2  # asked, declined: nothing done
    assert "not confirmed" in capsys.readouterr().err
    code, done = run(capsys, "--json", "--data-dir", d, "dust", "--execute", "--yes")
    assert code == 0 and done["dry_run"] is False and done["closed"] == dry["total_found"]


def test_a_broker_that_fails_is_a_non_zero_exit_for_normalize_and_dust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: --broker module:factory imports from the current directory, as python -m does."""
    (tmp_path / "down_broker.py").write_text(
        "from broker_guard.testing import PaperBroker\n"
        "def make():\n"
        "    broker = PaperBroker(positions={'ETH-USD': 0.001})\n"
        "    broker.fail_next('get_positions', 100, 'network')\n"
        "    return broker\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    args = ["--data-dir", str(tmp_path), "--broker", "down_broker:make"]
    assert main([*args, "normalize"]) == 3
    assert "broker failed" in capsys.readouterr().err
    assert main([*args, "dust"]) == 3


def test_change_commands_say_no_change_and_record_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    code, out = run(capsys, "--data-dir", d, "unrestrict", "XYZ-USD")
    assert code == 0 and "no change" in out
    code, out = run(capsys, "--data-dir", d, "restrict", "XYZ-USD", "--reason", "sanctions")
    assert code == 0 and "restricted" in out and "no change" not in out
    code, out = run(capsys, "--data-dir", d, "restrict", "XYZ-USD")
    assert "no change" in out
    code, out = run(capsys, "--data-dir", d, "unfreeze", "SOL-USD")
    assert "no change" in out
    log = JsonFileStore(tmp_path).read_lines("operator")
    assert [(e["action"], e["symbol"], e["reason"]) for e in log] == [
        ("restrict", "XYZ-USD", "sanctions")
    ]


def test_a_bare_ticker_the_guard_froze_can_be_unfrozen_in_the_same_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker_guard.guard.freeze_manager import SymbolFreezeManager

    SymbolFreezeManager(store=JsonFileStore(tmp_path)).freeze("AAPL", "halted stock")
    code, out = run(capsys, "--json", "--data-dir", str(tmp_path), "unfreeze", "AAPL")
    assert code == 0 and out["changed"] is True
    assert main(["--data-dir", str(tmp_path), "freeze", "AAPL"]) == 2  # adding one needs a pair


def test_help_has_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_the_demo_leaves_no_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main(["demo"]) == 0
    assert list(tmp_path.iterdir()) == []
