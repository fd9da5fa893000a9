from __future__ import annotations

import logging
from typing import Any

import pytest

from broker_guard import ConfigError, GuardConfig, GuardedBroker, MemoryStore
from broker_guard.testing import PaperBroker
from broker_guard.user_account_normalization import run_normalization_pass

# the seed's second worked example: 10 positions, ETH $5.00 and DOGE $3.25 below $7.50,
# BTC $9.00 a candidate
PRICES = {
    f"{a}-USD": 1.0
    for a in ("ETH", "DOGE", "BTC", "SOL", "ADA", "DOT", "XRP", "LTC", "LINK", "AVAX")
}
HOLDINGS = {"ETH-USD": 5.0, "DOGE-USD": 3.25, "BTC-USD": 9.0} | {s: 100.0 for s in list(PRICES)[3:]}


def seed_broker() -> PaperBroker:
    return PaperBroker(prices=PRICES, positions=HOLDINGS)


def test_seed_worked_example_dry_run_then_real(
    make_guard: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = seed_broker()
    guard = make_guard(broker, normalization={"close_consolidation_candidates": True})
    dry = guard.normalize()
    assert (
        dry["total_positions"],
        dry["below_minimum"],
        dry["consolidation_candidates"],
        dry["actions_required"],
    ) == (10, 2, 1, 3)
    assert dry["actions_executed"] == 0 and broker.orders == []
    with caplog.at_level(logging.INFO, logger="broker_guard"):
        real = guard.normalize(dry_run=False)
    assert (
        real["actions_required"] == 3
        and real["actions_executed"] == 3
        and real["actions_failed"] == 0
    )
    assert real["total_value_cleaned"] == pytest.approx(17.25)
    for line in (
        "SMALL POSITION: ETH-USD - $5.00 (below $7.50)",
        "SMALL POSITION: DOGE-USD - $3.25 (below $7.50)",
        "CONSOLIDATION CANDIDATE: BTC-USD - $9.00",
        "Total Positions: 10\n   Below Minimum ($7.50): 2\n   Consolidation Candidates: 1\n   "
        "Total Actions Required: 3",
        "Executing action 1/3\n   Type: close_small\n   Symbol: ETH-USD\n   Current Size: $5.00\n "
        "  Reason: Position below minimum $7.50",
        "Closing small position: ETH-USD ($5.00)",
        "Successfully closed ETH-USD",
        "Actions Required: 3\n   Successfully Executed: 3\n   Failed: 0",
    ):
        assert line in caplog.text, line


def test_candidates_are_flagged_not_closed_by_default(make_guard: Any) -> None:
    broker = seed_broker()
    result = make_guard(broker).normalize(dry_run=False)
    assert sorted(o["symbol"] for o in broker.orders) == ["DOGE-USD", "ETH-USD"]
    assert (
        result["actions_flagged"] == 1
        and result["positions_closed"] == 2
        and result["actions_executed"] == 3
    )
    assert result["total_value_cleaned"] == pytest.approx(8.25)


def test_dry_run_is_the_default(clock: Any) -> None:
    broker = seed_broker()
    result = run_normalization_pass(broker, store=MemoryStore(), config=GuardConfig.load(env={}))
    assert result["dry_run"] is True and broker.orders == [] and result["actions_required"] == 3


def test_a_mapping_of_three_accounts(clock: Any) -> None:
    accounts = {
        "alice": PaperBroker(prices=PRICES, positions={"ETH-USD": 5.0}, account_id="alice"),
        "bob": PaperBroker(
            prices=PRICES, positions={"DOGE-USD": 3.0, "BTC-USD": 50.0}, account_id="bob"
        ),
        "carol": PaperBroker(prices=PRICES, positions={"SOL-USD": 8.0}, account_id="carol"),
    }
    result = run_normalization_pass(
        accounts,
        minimum_position_usd=7.50,
        dry_run=False,
        store=MemoryStore(),
        config=GuardConfig.load(env={}),
    )
    assert set(result["accounts"]) == {"alice", "bob", "carol"}
    assert result["accounts"]["alice"]["positions_closed"] == 1
    assert (
        result["accounts"]["bob"]["positions_closed"] == 1
        and result["accounts"]["bob"]["total_positions"] == 2
    )
    assert result["accounts"]["carol"]["actions_flagged"] == 1
    assert result["total_positions"] == 4 and result["positions_closed"] == 2
    assert accounts["bob"].holdings == {"BTC": 50.0}
    assert {a["account"] for a in result["actions"]} == {"alice", "bob", "carol"}


def test_one_broken_account_does_not_stop_the_others() -> None:
    class Broken:
        def get_positions(self) -> Any:
            raise ConnectionError("down")

        def get_current_price(self, symbol: str) -> float:
            return 1.0

    result = run_normalization_pass(
        {"broken": Broken(), "ok": seed_broker()},
        dry_run=True,
        store=MemoryStore(),
        config=GuardConfig.load(env={}),
    )
    assert (
        "broken" in result["account_errors"] and result["accounts"]["ok"]["actions_required"] == 3
    )


def test_seed_snippet_runs_as_shown(capsys: pytest.CaptureFixture[str]) -> None:
    broker = seed_broker()
    result = run_normalization_pass(broker, minimum_position_usd=7.50, dry_run=True)
    print(f"Actions required: {result['actions_required']}")
    print(f"Actions executed: {result['actions_executed']}")
    print(f"Total value cleaned: ${result.get('total_value_cleaned', 0):.2f}")
    result = run_normalization_pass(broker, dry_run=False)
    out = capsys.readouterr().out
    assert (
        "Actions required: 3" in out
        and "Actions executed: 0" in out
        and "Total value cleaned: $0.00" in out
    )
    assert result["positions_closed"] == 2


@pytest.mark.parametrize("threshold", [float("inf"), float("nan"), -1.0])
def test_a_bad_minimum_is_refused_before_any_order(clock: Any, threshold: float) -> None:
    """``normalize(minimum_position_usd=inf)`` would close every position; a ConfigError instead."""
    broker = PaperBroker(prices={"BTC-USD": 50_000.0}, positions={"BTC-USD": 0.1})
    guard = GuardedBroker(broker, GuardConfig.load(env={}), store=MemoryStore(), clock=clock)
    with pytest.raises(ConfigError, match=r"normalization\.minimum_position_usd"):
        guard.normalize(dry_run=False, minimum_position_usd=threshold)
    with pytest.raises(ConfigError, match="normalization"):
        run_normalization_pass(guard, minimum_position_usd=threshold, dry_run=False)
    assert broker.orders == []
