"""Every CLI command, with the global options before and after it: the exit code is the one the
table in `--help` and in the README gives for what happened, and every `--json` output parses.

Each scenario names the meaning it expects ("success", "alert", "usage", "broker", "store"); the
code is looked up in both tables, so the tables, the code and the tests cannot drift apart.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import start_bot

from broker_guard.cli import build_parser, main
from broker_guard.testing import FakeClock

README = Path(__file__).resolve().parent.parent / "README.md"
MEANINGS = {  # scenario outcome -> words that name it in the tables
    "success": "success",
    "alert": "alert is raised",
    "store": "state store cannot be reached",
    "usage": "bad usage",
    "unconfirmed": "not confirmed",
    "missing": "data dir that does not exist",
    "broker": "broker failed",
}


def help_table() -> dict[int, str]:
    text = build_parser().format_help()
    block = text.split("Exit codes:", 1)[1]
    table: dict[int, str] = {}
    code = None
    for line in block.splitlines():
        found = re.match(r"^\s+(\d)\s+(.*)$", line)
        if found:
            code = int(found.group(1))
            table[code] = found.group(2)
        elif code is not None and line.strip():
            table[code] += " " + line.strip()
        elif code is not None:
            break
    return table


def readme_table() -> dict[int, str]:
    rows = re.findall(r"^\| (\d) \| (.+) \|$", README.read_text(encoding="utf-8"), re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def code_for(meaning: str) -> int:
    """The exit code both tables give for ``meaning``; they must agree."""
    words = MEANINGS[meaning]
    codes = {
        source: [code for code, text in table.items() if words in text]
        for source, table in (("--help", help_table()), ("README", readme_table()))
    }
    assert codes["--help"] == codes["README"] and len(codes["--help"]) == 1, codes
    return codes["--help"][0]


def test_the_two_tables_list_the_same_codes() -> None:
    assert set(help_table()) == set(readme_table()) == {0, 1, 2, 3}


Setup = Callable[[str], None]


def nothing(data_dir: str) -> None:
    """An existing data dir, nothing in it."""


def bot(data_dir: str) -> None:
    start_bot(data_dir)


def hour_ago() -> FakeClock:
    return FakeClock(time.time() - 3600)


def run_cli(*argv: str) -> None:
    assert main(list(argv)) == 0


FAILING_BROKER = textwrap.dedent(
    """
    from broker_guard.testing import FakeClock

    def make():
        broker = PaperBroker(prices={"BTC-USD": 50000.0}, positions={"BTC-USD": 0.01})
        broker.fail_next("get_positions", 100, "network")
        return broker
    """
)

# (id, command and its own arguments, setup, expected meaning, extra global options)
SCENARIOS: list[tuple[str, list[str], Setup, str, list[str]]] = [
    ("demo", ["demo"], nothing, "success", []),
    ("init", ["init"], nothing, "success", []),
    ("status", ["status"], nothing, "success", []),
    ("health ok", ["health"], bot, "success", []),
    ("health no bot", ["health"], nothing, "alert", []),
    ("health not seen", ["health"], lambda d: start_bot(d, clock=hour_ago()), "alert", []),
    ("halt", ["halt", "--reason", "r"], nothing, "success", []),
    ("resume", ["resume", "--reason", "r"], lambda d: run_cli("halt", "--reason", "r", "--data-dir", d), "success", []),  # noqa: E501
    ("freeze", ["freeze", "SOL-USD", "--reason", "r", "--for", "2h"], nothing, "success", []),
    ("unfreeze", ["unfreeze", "SOL-USD", "--reason", "r"], lambda d: run_cli("freeze", "SOL-USD", "--data-dir", d), "success", []),  # noqa: E501
    ("restrict", ["restrict", "SOL-USD", "--reason", "r"], nothing, "success", []),
    ("unrestrict", ["unrestrict", "AUT-USD", "--reason", "r"], nothing, "success", []),
    ("acknowledge", ["acknowledge-damage"], nothing, "success", []),
    ("forget", ["forget", "nobody", "--reason", "r"], nothing, "success", []),
    ("dust", ["dust", "--threshold", "1"], nothing, "success", ["--broker", "paper"]),
    ("dust execute", ["dust", "--execute", "--yes"], nothing, "success", ["--broker", "paper"]),
    ("normalize", ["normalize", "--minimum", "7.5"], nothing, "success", ["--broker", "paper"]),
    ("normalize execute", ["normalize", "--execute", "--yes"], nothing, "success", []),
    ("bad symbol", ["freeze", "!!"], nothing, "usage", []),
    ("bad duration", ["freeze", "SOL-USD", "--for", "soon"], nothing, "usage", []),
    ("bad broker", ["dust"], nothing, "usage", ["--broker", "nope"]),
    ("dust down", ["dust"], nothing, "broker", ["--broker", "failing_broker:make"]),
    ("normalize down", ["normalize"], nothing, "broker", ["--broker", "failing_broker:make"]),
    ("store down", ["status"], nothing, "store", ["--store", "redis://127.0.0.1:1/0"]),
    ("store down health", ["health"], nothing, "store", ["--store", "redis://127.0.0.1:1/0"]),
]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(
    ("argv", "setup", "meaning", "extra"),
    [pytest.param(*s[1:], id=s[0]) for s in SCENARIOS],
)
def test_every_command_in_both_positions(
    argv: list[str],
    setup: Setup,
    meaning: str,
    extra: list[str],
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "redis://" in " ".join(extra):
        pytest.importorskip("redis")
    (tmp_path / "failing_broker.py").write_text(FAILING_BROKER)
    monkeypatch.chdir(tmp_path)  # module:factory is imported from the current directory
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"symbol_freeze": {"alert_frozen_count": 5}}))
    setup(str(data_dir))
    capsys.readouterr()
    options = ["--json", "--data-dir", str(data_dir), "--config", str(config), *extra]
    full = [*options, *argv] if where == "before" else [*argv, *options]
    code = main(full)
    out, err = capsys.readouterr()
    assert code == code_for(meaning), (full, out, err)
    if meaning == "success" or meaning == "alert":
        document = json.loads(out)  # one JSON document, nothing else on stdout
        assert isinstance(document, dict)
    else:
        assert err.strip().startswith("broker-guard:"), err


@pytest.mark.parametrize(
    "argv",
    [
        ["dust", "--execute"],
        ["normalize", "--execute"],
    ],
)
def test_an_order_run_not_confirmed_is_the_tables_code(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main([*argv, "--data-dir", str(tmp_path)]) == code_for("unconfirmed")
    assert "not confirmed" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["status"], ["health"], ["freeze", "SOL-USD"], ["serve"]])
def test_a_missing_data_dir_is_the_tables_code(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--data-dir", str(tmp_path / "typo")]) == code_for("missing")


def test_serve_takes_its_options_in_both_positions(tmp_path: Path) -> None:
    """serve runs until stopped (tests/test_metrics.py starts it): here, the same parse."""
    parser = build_parser()
    options = ["--json", "--data-dir", str(tmp_path), "--store-prefix", "x"]
    before = parser.parse_args([*options, "serve", "--port", "0"])
    after = parser.parse_args(["serve", "--port", "0", *options])
    assert vars(before) == vars(after)


def test_every_command_is_in_the_matrix() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {s[1][0] for s in SCENARIOS} | {"serve"}
    assert set(sub.choices) == covered  # type: ignore[arg-type]
