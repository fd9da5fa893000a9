"""Reading what an order would reduce: ccxt market types and any broker's positions answer."""

from __future__ import annotations

from typing import Any

import pytest

from broker_guard.guard.exposure import ccxt_derivative, signed_positions


class Exchange:
    def __init__(self, markets: dict[str, Any] | None = None, default: str = "spot") -> None:
        self.markets = markets or {}
        self.options = {"defaultType": default}


@pytest.mark.parametrize(
    ("exchange", "symbol", "params", "expected"),
    [
        (Exchange({"BTC/USDT": {"type": "spot"}}), "BTC/USDT", None, False),
        (Exchange({"BTC/USDT:USDT": {"type": "swap"}}), "BTC/USDT:USDT", None, True),
        (Exchange({"BTC/USD": {"type": "future"}}), "BTC/USD", None, True),
        (Exchange(), "BTC/USDT:USDT", None, True),  # markets not loaded: the settle suffix
        (Exchange(default="swap"), "BTCUSDT", None, True),
        (Exchange(default="margin"), "BTC/USDT", None, True),
        (Exchange({"BTC/USDT": {"type": "spot"}}), "BTC/USDT", {"marginMode": "cross"}, True),
        (Exchange({"BTC/USDT": {"type": "spot"}}), "BTC/USDT", {"type": "margin"}, True),
        (Exchange({"BTC/USDT": {"type": "spot"}}), "BTC/USDT", {"tdMode": "cash"}, False),
        (Exchange({"BTC/USDT": {"type": "spot"}}), "BTC/USDT", {"reduceOnly": False}, False),
    ],
)
def test_ccxt_market_kind(exchange: Any, symbol: str, params: Any, expected: bool) -> None:
    assert ccxt_derivative(exchange, symbol, params) is expected


CCXT_POSITIONS = [
    {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.3},
    {"symbol": "BTC/USDT:USDT", "side": "short", "contracts": 0.1},  # hedge mode
    {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 2.0},
]


@pytest.mark.parametrize(
    ("answer", "symbol", "side", "expected"),
    [
        (CCXT_POSITIONS, "BTC/USDT:USDT", None, pytest.approx(0.2)),
        (CCXT_POSITIONS, "BTC/USDT:USDT", "long", 0.3),
        (CCXT_POSITIONS, "BTC/USDT:USDT", "short", -0.1),
        (CCXT_POSITIONS, "ETH/USDT:USDT", None, -2.0),
        (CCXT_POSITIONS, "SOL/USDT:USDT", None, 0.0),  # holds none
        ([{"symbol": "ETH-USD", "quantity": 0.5, "currency": "ETH"}], "ETH-USD", None, 0.5),
        ([{"currency": "ETH", "qty": "0.5"}], "ETH-USD", None, 0.5),
        ({"ETH-USD": 0.5, "BTC-USD": 1.0}, "ETH-USD", None, 0.5),
        ({"ETH": {"quantity": -1.5}}, "ETH-USD", None, -1.5),  # one-way: the sign says
        ([{"symbol": "ETH-USD", "quantity": "n/a"}], "ETH-USD", None, None),  # unreadable
        ([{"symbol": "ETH-USD", "quantity": 1, "side": "sideways"}], "ETH-USD", None, None),
        ("nonsense", "ETH-USD", None, None),
        (None, "ETH-USD", None, None),
    ],
)
def test_signed_positions(answer: Any, symbol: str, side: str | None, expected: Any) -> None:
    assert signed_positions(answer, symbol, side) == expected
