"""Wrap a small broker class of your own and watch retry, fallback and a freeze happen.

Run: python examples/guard_a_broker.py   (no account, no network, no waiting: time is simulated)
"""

from __future__ import annotations

import logging
import tempfile

from broker_guard import GuardConfig, SymbolFrozenError, guard_of, wrap
from broker_guard.testing import FakeClock


class MyBroker:
    """A bot's own broker class: flaky balance, one symbol the exchange has delisted."""

    def __init__(self) -> None:
        self.balance_failures = 0
        self.nickname = "my-broker"  # any attribute still works through the guard

    def get_account_balance(self) -> float:
        if self.balance_failures:
            self.balance_failures -= 1
            raise ConnectionError("Network error")
        return 1000.0

    def get_current_price(self, symbol: str) -> float:
        if symbol == "AUTX-USD":
            raise ValueError("Price not available")
        return {"BTC-USD": 50_000.0, "ETH-USD": 2_500.0}[symbol]

    def place_market_order(self, symbol: str, side: str, quantity: float) -> dict[str, object]:
        return {"symbol": symbol, "side": side, "quantity": quantity, "status": "filled"}

    def describe(self) -> str:  # not a guarded role: passes straight through
        return f"{self.nickname} with {self.get_account_balance():.2f} USD"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clock = FakeClock()  # time moves only when the guard "sleeps"
    broker = MyBroker()
    config = GuardConfig.load(env={}, data_dir=tempfile.mkdtemp(prefix="broker-guard-example-"))
    guarded = wrap(broker, config, clock=clock, sleep=clock.sleep)  # typed as a MyBroker

    print(
        f"\n1. Drop-in: {guarded.describe()}; isinstance MyBroker: {isinstance(guarded, MyBroker)}"
    )

    print("\n2. Two network errors, then success (waits 2s, 4s):")
    broker.balance_failures = 2
    print(f"   balance = {guarded.get_account_balance():.2f}; slept {clock.sleeps}")

    print("\n3. The broker stays down: the last known balance is served, with its age:")
    clock.advance(300)
    broker.balance_failures = 99
    print(f"   balance = {guarded.get_account_balance():.2f}")
    broker.balance_failures = 0

    print(
        "\n4. A delisted symbol fails three times and is frozen; entries are refused, exits pass:"
    )
    for _ in range(3):
        try:
            guarded.get_current_price("AUTX-USD")
        except ValueError as exc:
            print(f"   price failed: {exc}")
    try:
        guarded.place_market_order("AUTX-USD", "buy", 1.0)
    except SymbolFrozenError as exc:
        print(f"   buy refused: {exc}")
    print(f"   sell allowed: {guarded.place_market_order('AUTX-USD', 'sell', 1.0)['status']}")
    print(
        f"\n5. health: {guard_of(guarded).health()['alerts'] or 'no alerts'}; frozen: "
        f"{guard_of(guarded).health()['frozen_symbols']}"
    )


if __name__ == "__main__":
    main()
