"""Types survive the wrap: a user's ``mypy --strict`` checks calls through ``wrap(broker)``
against the broker's own signatures and accepts it where the broker's type is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent

USER_BOT = """
from broker_guard import GuardedBroker, guard_of, wrap
from broker_guard.testing import PaperBroker


class MyBroker:
    def get_account_balance(self) -> float:
        return 100.0

    def get_current_price(self, symbol: str) -> float:
        return 1.0

    def place_market_order(self, symbol: str, side: str, quantity: float) -> str:
        return "ok"


def trade(broker: MyBroker) -> float:
    return broker.get_current_price("BTC-USD")


guarded = wrap(MyBroker())
trade(guarded)
price: float = guarded.get_current_price("BTC-USD")
halted: bool = guard_of(guarded).resume("checked")
guard: GuardedBroker = guard_of(wrap(PaperBroker()))
guarded.get_curent_price("BTC-USD")  # line 26
guarded.get_current_price(42)  # line 27
"""


def test_calls_through_a_wrapped_broker_are_checked_against_its_own_signatures(
    tmp_path: Path,
) -> None:
    (tmp_path / "user_bot.py").write_text(USER_BOT)
    # as for an installed package: the user's code strict, broker_guard's own findings not theirs
    ini = (
        f"[mypy]\nstrict = True\nmypy_path = {ROOT}\n[mypy-broker_guard.*]\nignore_errors = True\n"
    )
    (tmp_path / "mypy.ini").write_text(ini)
    out, err, _status = api.run(
        [
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(tmp_path / "user_bot.py"),
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2, out + err
    assert 'user_bot.py:26: error: "MyBroker" has no attribute "get_curent_price"' in errors[0]
    assert "user_bot.py:27: error: Argument 1" in errors[1] and '"str"' in errors[1]


def test_guard_of_refuses_what_is_not_guarded() -> None:
    from broker_guard import guard_of, wrap
    from broker_guard.testing import PaperBroker

    paper = PaperBroker()
    with pytest.raises(TypeError, match="wrap it first"):
        guard_of(paper)
    guarded = wrap(paper)
    assert isinstance(guarded, PaperBroker)
    assert guard_of(guarded).health()["ok"] in (True, False)
