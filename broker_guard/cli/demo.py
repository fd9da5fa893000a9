"""The demo: every seed component on the paper broker with injected faults, in simulated time."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from typing import Any

from broker_guard.cli.base import EXIT_OK, emit
from broker_guard.clock import FakeClock
from broker_guard.config import GuardConfig
from broker_guard.errors import BrokerGuardError
from broker_guard.guarded import guard_of, wrap
from broker_guard.paper import PaperBroker

DEMO_PRICES = {
    "ETH-USD": 2500.0,
    "DOGE-USD": 0.15,
    "BTC-USD": 50_000.0,
    "SOL-USD": 100.0,
    "ADA-USD": 0.5,
    "LUNA-USD": 0.0001,
}
DEMO_POSITIONS = {
    "ETH-USD": 0.0002,
    "DOGE-USD": 5.0,
    "BTC-USD": 0.01,
    "SOL-USD": 0.05,
    "ADA-USD": 6.5,
}


def cmd_demo(args: argparse.Namespace) -> int:
    """Every seed component on the paper broker with injected faults; simulated time, so it takes a
    second. With --json the narration goes to stderr and stdout gets the summary."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    narration = sys.stderr if args.json else sys.stdout
    handler = logging.StreamHandler(narration)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)  # setLevel, not assignment: it clears the loggers' level caches
    try:
        with contextlib.redirect_stdout(narration):
            summary = _demo(args)
    finally:
        root.handlers = saved[1]
        root.setLevel(saved[0])
    if args.json:
        emit(args, summary, "")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    if args.data_dir:
        return _demo_in(args, args.data_dir)
    with tempfile.TemporaryDirectory(prefix="broker-guard-demo-") as data_dir:
        return _demo_in(args, data_dir)


def _demo_in(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    clock = FakeClock()
    broker = PaperBroker(prices=DEMO_PRICES, positions=DEMO_POSITIONS, cash=1000.0)
    config = GuardConfig.load(args.config, data_dir=data_dir, freeze={"auto_unfreeze": True})
    guarded = wrap(broker, config, clock=clock, sleep=clock.sleep)  # typed as a PaperBroker
    guard = guard_of(guarded)  # the guard's own API: dust, normalize, health

    def screen(title: str) -> None:
        print(f"\n{'#' * 70}\n# {title}\n{'#' * 70}")

    screen("1/5 Enhanced Balance Fetcher: two network errors, then success")
    broker.fail_next("get_account_balance", 2, "network")
    print(f"balance = ${guarded.get_account_balance():.2f} (simulated waits: {clock.sleeps})")
    screen(
        "2/5 Enhanced Balance Fetcher: the broker stays down, fallback to the last known balance"
    )
    clock.advance(5 * 60)
    broker.fail_next("get_account_balance", 3, "network")
    print(f"balance = ${guarded.get_account_balance():.2f}")
    screen(
        "3/5 Symbol Freeze Manager: a delisted coin freezes, a restricted one is refused, a probe "
        "unfreezes"
    )
    broker.delist("LUNA-USD")
    for _ in range(3):
        try:
            guarded.get_current_price("LUNA-USD")
        except Exception as exc:
            print(f"price call failed: {exc}")
    for symbol, side in (("LUNA-USD", "buy"), ("AUT-USD", "buy")):
        try:
            guarded.place_market_order(symbol, side, 1.0)
        except BrokerGuardError as exc:
            print(f"REFUSED {side} {symbol}: {type(exc).__name__}")
    broker.relist("LUNA-USD")
    clock.advance(24 * 3600)
    print(
        f"after the 24h cooldown, the probe call returns {guarded.get_current_price('LUNA-USD')}: "
        f"LUNA-USD unfrozen"
    )
    screen("4/5 Broker Dust Cleanup: dry run, then for real")
    guard.dust(dry_run=True)
    guard.dust(dry_run=False)
    screen("5/5 User Account Normalization: dry run, then for real")
    guard.normalize(dry_run=True)
    guard.normalize(dry_run=False)
    guarded.get_account_balance()  # the broker is back: the balance alerts clear
    health = guard.health()
    print(
        f"\nhealth: {'OK' if health['ok'] else health['alerts']}; orders placed: "
        f"{len(broker.orders)}; data dir: {data_dir}"
    )
    return {"health": health, "orders_placed": len(broker.orders), "data_dir": data_dir}


COMMANDS = {"demo": cmd_demo}
