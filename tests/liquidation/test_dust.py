from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from broker_guard import ConfigError, JsonFileStore
from broker_guard.broker_dust_cleanup import get_broker_dust_cleanup
from broker_guard.liquidation.positions import parse_positions
from broker_guard.testing import PaperBroker

SEED_5 = {"ETH-USD": 0.0002, "DOGE-USD": 5.0, "BTC-USD": 0.01, "SOL-USD": 1.0, "ADA-USD": 100.0}
PRICES = {
    "ETH-USD": 2500.0,
    "DOGE-USD": 0.15,
    "BTC-USD": 50_000.0,
    "SOL-USD": 100.0,
    "ADA-USD": 0.5,
}


def seed_broker() -> PaperBroker:
    return PaperBroker(prices=PRICES, positions=SEED_5)


def test_seed_worked_example(make_guard: Any, caplog: pytest.LogCaptureFixture) -> None:
    broker = seed_broker()
    guard = make_guard(broker)
    with caplog.at_level(logging.INFO, logger="broker_guard"):
        result = guard.dust()
    assert result["total_positions"] == 5 and result["total_found"] == 2
    assert result["closed"] == 2 and result["failed"] == 0
    assert result["total_value_cleaned"] == pytest.approx(1.25)
    assert sorted(o["symbol"] for o in broker.orders) == ["DOGE-USD", "ETH-USD"]
    assert all(o["force_liquidate"] for o in broker.orders)
    for line in (
        "STARTING BROKER-LEVEL DUST CLEANUP",
        "Found 5 total positions",
        "DUST: ETH-USD - $0.5000 (0.00020000 ETH)",
        "DUST: DOGE-USD - $0.7500 (5.00000000 DOGE)",
        "Found 2 dust positions to clean up:\n   Total dust value: $1.2500",
        "Closing dust position: ETH-USD\n   Quantity: 0.00020000 ETH\n   USD Value: $0.5000",
        "Successfully closed ETH-USD",
        "Total Found: 2\n   Successfully Closed: 2\n   Failed: 0",
        "Total Value Cleaned: $1.2500",
    ):
        assert line in caplog.text, line


def test_dry_run_places_no_order_and_is_audited(make_guard: Any) -> None:
    broker = seed_broker()
    guard = make_guard(broker)
    result = guard.dust(dry_run=True)
    assert broker.orders == [] and result["closed"] == 0 and result["dry_run_would_close"] == 2
    audit = guard.guard_context.store.read_lines("audit")
    assert [(r["symbol"], r["outcome"], r["dry_run"]) for r in audit] == [
        ("ETH-USD", "dry_run", True),
        ("DOGE-USD", "dry_run", True),
    ]


def test_second_run_closes_nothing(make_guard: Any) -> None:
    guard = make_guard(seed_broker())
    assert guard.dust()["closed"] == 2
    assert guard.dust()["closed"] == 0


def test_broker_without_force_liquidate_uses_close_position(make_guard: Any) -> None:
    class NoForce:
        def __init__(self) -> None:
            self.closed: list[str] = []
            self.held = {"ETH-USD": 0.0002}

        def get_positions(self) -> list[dict[str, Any]]:
            return [{"symbol": s, "quantity": q} for s, q in self.held.items()]

        def get_current_price(self, symbol: str) -> float:
            return 2500.0

        def place_market_order(self, symbol: str, side: str, quantity: float) -> dict[str, Any]:
            raise AssertionError("should close through close_position")

        def close_position(self, symbol: str) -> dict[str, Any]:
            self.closed.append(symbol)
            self.held.pop(symbol)
            return {"status": "filled"}

    broker = NoForce()
    assert make_guard(broker).dust()["closed"] == 1 and broker.closed == ["ETH-USD"]


def test_broker_with_only_a_plain_market_order(make_guard: Any) -> None:
    class Plain:
        def __init__(self) -> None:
            self.orders: list[tuple[str, str, float]] = []

        def get_positions(self) -> list[dict[str, Any]]:
            return [] if self.orders else [{"symbol": "DOGE-USD", "quantity": 5.0}]

        def get_current_price(self, symbol: str) -> float:
            return 0.15

        def place_market_order(self, symbol: str, side: str, quantity: float) -> dict[str, Any]:
            self.orders.append((symbol, side, quantity))
            return {"status": "filled"}

    broker = Plain()
    assert make_guard(broker).dust()["closed"] == 1 and broker.orders == [("DOGE-USD", "sell", 5.0)]


def test_order_rejected_below_minimum_is_reported_and_the_run_goes_on(make_guard: Any) -> None:
    class Strict(PaperBroker):
        def place_market_order(
            self,
            symbol: str,
            side: str,
            quantity: float,
            force_liquidate: bool = False,
            ignore_min_trade: bool = False,
        ) -> Any:
            if symbol == "ETH-USD":
                # ignores the force flag: rejected
                return super().place_market_order(symbol, side, quantity)
            return super().place_market_order(symbol, side, quantity, force_liquidate=True)

    broker = Strict(prices=PRICES, positions=SEED_5)
    result = make_guard(broker).dust()
    assert result["closed"] == 1 and result["failed"] == 1
    failed = [p for p in result["positions"] if p["status"] == "failed"]
    assert failed[0]["symbol"] == "ETH-USD" and "below minimum trade size" in failed[0]["error"]


def test_price_moving_above_threshold_between_scan_and_close(make_guard: Any) -> None:
    class Moving(PaperBroker):
        def get_current_price(self, symbol: str) -> float:
            price = super().get_current_price(symbol)
            if symbol == "DOGE-USD" and self.calls["get_current_price"] > 5:
                return 1.0  # 5 DOGE now worth $5
            return price

    broker = Moving(prices=PRICES, positions=SEED_5)
    result = make_guard(broker).dust()
    assert [o["symbol"] for o in broker.orders] == ["ETH-USD"]
    doge = next(p for p in result["positions"] if p["symbol"] == "DOGE-USD")
    assert doge["status"] == "skipped" and "at or above" in doge["reason"]


def test_unknown_values_are_skipped_never_closed(make_guard: Any) -> None:
    broker = PaperBroker(
        prices={"ETH-USD": 2500.0},
        positions={"ETH-USD": 0.0001, "AUT-USD": 1.0, "XYZ-USD": 1.0, "FRZ-USD": 1.0},
    )
    broker.prices["FRZ/USD"] = 0.1
    guard = make_guard(broker)
    guard.freeze_manager.freeze("FRZ-USD")
    result = guard.dust()
    assert [o["symbol"] for o in broker.orders] == ["ETH-USD"]
    reasons = {p["symbol"]: p["problem"] for p in result["positions"] if p["status"] == "skipped"}
    assert set(reasons) == {"AUT-USD", "XYZ-USD", "FRZ-USD"}
    assert all("value unknown" in r for r in reasons.values())


def test_broker_reported_value_disagreeing_makes_value_unknown(make_guard: Any) -> None:
    class Mismapped:
        def get_positions(self) -> list[dict[str, Any]]:
            return [{"symbol": "BTC-USD", "quantity": 1.0, "usd_value": 50_000.0}]

        def get_current_price(self, symbol: str) -> float:
            return 0.5  # a mis-mapped price would make $50k look like dust

        def place_market_order(self, *a: Any, **k: Any) -> Any:
            raise AssertionError("must never be called")

    result = make_guard(Mismapped()).dust()
    assert result["closed"] == 0 and "broker reports" in result["positions"][0]["problem"]


def test_lots_are_summed_before_the_threshold() -> None:
    positions = parse_positions(
        [
            {"symbol": "ETH-USD", "quantity": 0.0002},
            {"symbol": "eth/usd", "quantity": 0.0002},
            {"symbol": "USD", "quantity": 5},
        ],
        "a",
        ["USD"],
    )
    assert (
        len(positions) == 1
        and positions[0].quantity == pytest.approx(0.0004)
        and positions[0].lots == 2
    )


def test_shorts_zero_and_malformed_are_reported_not_traded(make_guard: Any) -> None:
    class Odd:
        def get_positions(self) -> list[Any]:
            return [
                {"symbol": "ETH-USD", "quantity": -0.0001},
                {"symbol": "SOL-USD", "quantity": "lots"},
                {"quantity": 1},
            ]

        def get_current_price(self, symbol: str) -> float:
            return 1.0

        def place_market_order(self, *a: Any, **k: Any) -> Any:
            raise AssertionError("must never be called")

    result = make_guard(Odd()).dust()
    assert result["total_positions"] == 3 and result["closed"] == 0
    problems = [p["problem"] for p in result["positions"]]
    assert any("short" in p for p in problems) and any("malformed" in p for p in problems)


def test_cap_per_run(make_guard: Any) -> None:
    broker = seed_broker()
    result = make_guard(broker, dust={"max_usd_per_run": 0.6}).dust()
    assert result["closed"] == 1 and result["total_value_cleaned"] <= 0.6


def test_audit_file_after_a_crash_is_readable(tmp_path: Path, make_guard: Any) -> None:
    store = JsonFileStore(tmp_path)
    guard = make_guard(seed_broker(), store=store)
    guard.dust()
    with open(tmp_path / "audit.jsonl", "a") as handle:
        handle.write('{"symbol": "SOL-USD", "outc')  # killed mid-line
    records = store.read_lines("audit")
    assert [r["outcome"] for r in records] == ["pending", "closed", "pending", "closed"]
    for line in (tmp_path / "audit.jsonl").read_text().splitlines()[:-1]:
        record = json.loads(line)
        assert record["time"].endswith("+00:00") and {
            "account",
            "symbol",
            "quantity",
            "value_usd",
            "price",
            "dry_run",
            "error",
        } <= set(record)


def test_seed_snippet_runs_as_shown(capsys: pytest.CaptureFixture[str]) -> None:
    broker = seed_broker()
    cleanup = get_broker_dust_cleanup(dust_threshold_usd=1.00, dry_run=False)
    dust_positions = cleanup.find_dust_positions(broker)
    print(f"Found {len(dust_positions)} dust positions")
    result = cleanup.cleanup_all_dust(broker)
    print(f"Closed {result['closed']} positions")
    print(f"Total value cleaned: ${result['total_value_cleaned']:.2f}")
    out = capsys.readouterr().out
    assert (
        "Found 2 dust positions" in out
        and "Closed 2 positions" in out
        and "Total value cleaned: $1.25" in out
    )


@pytest.mark.parametrize("threshold", [float("inf"), float("nan"), -1.0])
def test_a_bad_threshold_is_refused_before_any_order(make_guard: Any, threshold: float) -> None:
    """``dust(threshold_usd=inf)`` would sell every position; it is a ConfigError instead."""
    broker = PaperBroker(prices={"BTC-USD": 50_000.0}, positions={"BTC-USD": 0.1})
    guard = make_guard(broker)
    with pytest.raises(ConfigError, match=r"dust_cleanup\.threshold_usd"):
        guard.dust(dry_run=False, threshold_usd=threshold)
    with pytest.raises(ConfigError, match=r"dust_cleanup\.threshold_usd"):
        get_broker_dust_cleanup().cleanup_all_dust(guard, threshold_usd=threshold)
    assert broker.orders == []


def test_no_order_when_the_pending_audit_line_cannot_be_written(
    tmp_path: Path, make_guard: Any
) -> None:
    broker = PaperBroker(prices={"DOGE-USD": 0.1}, positions={"DOGE-USD": 3.0}, cash=10.0)
    (tmp_path / "audit.jsonl").mkdir()  # a directory where the audit file should be
    guard = make_guard(broker, store=JsonFileStore(tmp_path))
    result = guard.dust(dry_run=False)
    assert broker.orders == [] and result["failed"] == 1 and result["closed"] == 0
    assert broker.get_positions()[0]["quantity"] == 3.0


class FillsThenRaises(PaperBroker):
    """The order fills at the venue, then the answer is lost (a timeout after the fill)."""

    def place_market_order(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        super().place_market_order(*args, **kwargs)
        raise TimeoutError("read timed out after the order was sent")


def test_the_cap_counts_orders_that_fill_and_then_raise(make_guard: Any) -> None:
    """Before: with a $1 cap, ten such orders sold $5 (a raised order did not count)."""
    prices = {f"D{i}-USD": 0.5 for i in range(10)}
    broker = FillsThenRaises(prices=prices, positions={s: 1.0 for s in prices})
    guard = make_guard(broker, dust={"max_usd_per_run": 1.0})
    result = guard.dust()
    assert len(broker.orders) == 2  # $0.50 each: the cap holds
    assert result["unknown"] == 2 and result["failed"] == 2 and result["closed"] == 0
    assert result["total_value_cleaned"] == 0.0  # not known to be closed
    audit = guard.guard_context.store.read_lines("audit")
    unknown = [r for r in audit if r["outcome"] == "unknown"]
    assert len(unknown) == 2
    assert all(r["quantity_after"] == 0.0 for r in unknown)  # re-read at once: none left
    capped = [p for p in result["positions"] if "cap" in p["reason"]]
    assert len(capped) == 8


class RefusesFirmly(PaperBroker):
    def place_market_order(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ValueError("invalid quantity")  # a definite answer: nothing filled


def test_a_definite_refusal_is_failed_not_unknown_and_still_counts_as_sent(
    make_guard: Any,
) -> None:
    prices = {f"D{i}-USD": 0.5 for i in range(4)}
    broker = RefusesFirmly(prices=prices, positions={s: 1.0 for s in prices})
    result = make_guard(broker, dust={"max_usd_per_run": 1.0}).dust()
    assert result["failed"] == 2 and result["unknown"] == 0


def test_the_result_is_plain_json_with_the_run_objects_beside_it(make_guard: Any) -> None:
    """``json.dumps(guard.dust())`` works (a dict of JSON values, no NaN), odd positions
    included; the outcomes with their positions stay reachable as attributes."""
    broker = PaperBroker(
        prices={**PRICES, "LUNA-USD": 0.0001},
        positions={**SEED_5, "LUNA-USD": 1000.0, "GONE-USD": 3.0},
    )
    broker.delist("LUNA-USD")
    guard = make_guard(broker)
    for dry_run in (True, False):
        result = guard.dust(dry_run=dry_run)
        assert type(json.loads(json.dumps(result, allow_nan=False))) is dict
        assert json.loads(json.dumps(result)) == result.as_dict() == dict(result)
        assert result.dry_run is dry_run and len(result.outcomes) == len(result["positions"])
    assert result["closed"] == 2 and {o.position.symbol for o in result.outcomes} >= {
        "DOGE-USD",
        "LUNA-USD",
    }
    normalized = guard.normalize(dry_run=True)
    assert type(json.loads(json.dumps(normalized, allow_nan=False))) is dict
