"""The operator's command line: ``broker-guard COMMAND``.

Commands: demo, status, health, halt, resume, freeze, unfreeze, restrict, unrestrict,
acknowledge-damage, dust, normalize.

Exit codes: 0 success; 1 an alert is raised (``health``), an action failed or
the state store cannot be reached (nothing was changed);
2 bad usage or configuration (unknown broker spec, bad symbol, missing
credentials or data dir); 3 the broker failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from broker_guard.clock import FakeClock, parse_aware_time, parse_duration, utc_iso
from broker_guard.config import GuardConfig
from broker_guard.errors import BrokerGuardError, ConfigError, StoreError
from broker_guard.events import GuardEvent
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guarded import GuardedBroker
from broker_guard.paper import PaperBroker
from broker_guard.state.select import store_from_config
from broker_guard.symbols import canonical_symbol

EXIT_OK, EXIT_ALERT, EXIT_USAGE, EXIT_BROKER = 0, 1, 2, 3
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


class UsageError(Exception):
    """Bad input from the operator: exit code 2 with a message that says what to do."""


def make_broker(spec: str) -> Any:
    """``paper`` (default), ``ccxt:<exchange id>`` (keys from
    BROKER_GUARD_API_KEY/_SECRET/_PASSWORD), or ``module:factory``."""
    if spec == "paper":
        return PaperBroker(prices=DEMO_PRICES, positions=DEMO_POSITIONS)
    if spec.startswith("ccxt:"):
        exchange_id = spec.split(":", 1)[1]
        try:
            ccxt = importlib.import_module("ccxt")
        except ImportError:
            raise UsageError("ccxt is not installed: pip install 'broker-guard[ccxt]'") from None
        if not hasattr(ccxt, exchange_id):
            raise UsageError(f"ccxt has no exchange {exchange_id!r}")
        key, secret = (
            os.environ.get("BROKER_GUARD_API_KEY"),
            os.environ.get("BROKER_GUARD_API_SECRET"),
        )
        if not key or not secret:
            raise UsageError(
                "missing credentials: set BROKER_GUARD_API_KEY and BROKER_GUARD_API_SECRET (never "
                "pass keys as arguments)"
            )
        options = {"apiKey": key, "secret": secret}
        if os.environ.get("BROKER_GUARD_API_PASSWORD"):
            options["password"] = os.environ["BROKER_GUARD_API_PASSWORD"]
        return getattr(ccxt, exchange_id)(options)
    module_name, sep, factory = spec.partition(":")
    if not sep or not module_name or not factory:
        raise UsageError(
            f"unknown broker spec {spec!r}: use paper, ccxt:<exchange id> or module:factory"
        )
    try:
        return getattr(importlib.import_module(module_name), factory)()
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load broker {spec!r}: {exc}") from None


def _config(args: argparse.Namespace) -> GuardConfig:
    overrides: dict[str, Any] = {}
    for option in ("data_dir", "store_url", "store_prefix"):
        if getattr(args, option, None):
            overrides[option] = getattr(args, option)
    config = GuardConfig.load(args.config, **overrides)
    if config.guard.store_url is None:
        act_as_data_dir_owner(config.data_dir)
    return config


def act_as_data_dir_owner(data_dir: Path) -> None:
    """Run as root (``sudo broker-guard freeze X``), write as the user who owns the data dir: a
    root-owned state file would lock that user's bots out of their own state."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    try:
        st = os.stat(data_dir)
    except FileNotFoundError:
        return
    if st.st_uid == 0:
        return
    try:
        os.setgroups([st.st_gid])
        os.setegid(st.st_gid)
        os.seteuid(st.st_uid)
    except OSError as exc:
        raise UsageError(
            f"running as root on {data_dir}, owned by uid {st.st_uid}: cannot act as that user "
            f"({exc}); nothing was changed. Run the command as the data dir's owner"
        ) from None


def _manager(args: argparse.Namespace, *, must_exist: bool = True) -> SymbolFreezeManager:
    """The freeze manager on the configured store; an unreachable Redis is an error here, never
    memory."""
    config = _config(args)
    if config.guard.store_url is None and must_exist and not config.data_dir.is_dir():
        raise UsageError(
            f"data dir {config.data_dir} does not exist: pass --data-dir or set "
            f"BROKER_GUARD_DATA_DIR"
        )
    store = store_from_config(config, degrade=False)
    args.stores.append(store)
    manager = SymbolFreezeManager(config.freeze, store=store)
    _check_saved(manager)
    return manager


def _check_saved(manager: SymbolFreezeManager) -> None:
    """The manager keeps a change it could not save in memory, which is right for a bot and wrong
    for an operator."""
    problem = manager.get_stats()["store_problem"]
    if problem:
        raise StoreError(f"state store {manager.store.health().location}: {problem}")


def _symbol(text: str) -> str:
    try:
        canonical_symbol(text)
    except ValueError as exc:
        raise UsageError(f"bad symbol {text!r}: {exc}") from None
    if "/" not in canonical_symbol(text):
        raise UsageError(f"bad symbol {text!r}: expected BASE-QUOTE such as BTC-USD")
    return text


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def cmd_status(args: argparse.Namespace) -> int:
    manager = _manager(args)
    stats = manager.get_stats()
    frozen = {s: info.as_dict() for s, info in manager.get_frozen_symbols().items()}
    balances = manager.store.read("balances")
    payload = {
        "halted": stats["halted"],
        "frozen": frozen,
        "pending": stats["pending_symbols"],
        "restricted": stats["restricted_symbols"],
        "balances": balances.get("balances", {}),
        "persistence": manager.store.health().as_dict(),
    }
    halt = stats["halted"]
    lines = [
        f"Trading HALTED since {halt['at']} by {halt['by']}: {halt['reason']} (entries refused "
        "everywhere, exits allowed; `broker-guard resume --reason ...`)"
        if halt
        else "Trading: not halted"
    ]
    lines.append(f"Frozen symbols: {len(frozen)}")
    lines += [
        f"  {s}: frozen by {info.frozen_by} at {info.frozen_at_iso}: {info.reason} "
        f"({info.consecutive_failures} failures{', REVIEW' if info.manual_review else ''}); "
        + (
            f"probed after {utc_iso(info.unfreeze_at)}"
            if info.unfreeze_at is not None
            else "never probed: stays frozen until unfrozen by hand"
        )
        for s, info in manager.get_frozen_symbols().items()
    ]
    lines.append(f"Pending failure counts: {stats['pending_symbols'] or 'none'}")
    lines.append(f"Restricted: {', '.join(stats['restricted_symbols']) or 'none'}")
    lines += [
        f"Last balance {k}: {v['value']} at {v['fetched_at']}"
        for k, v in payload["balances"].items()
    ]
    lines.append(
        f"Persistence: "
        f"{'ok' if payload['persistence']['ok'] else payload['persistence']['degraded']}"
    )
    _emit(args, payload, "\n".join(lines))
    return EXIT_OK


def cmd_symbol(args: argparse.Namespace) -> int:
    symbol = _symbol(args.symbol)
    manager = _manager(args, must_exist=args.command in ("unfreeze", "unrestrict"))
    if args.command == "freeze":
        manager.freeze(symbol, args.reason or "frozen by operator", for_hours=_freeze_hours(args))
        changed = True
    elif args.command == "unfreeze":
        changed = manager.unfreeze_symbol(symbol, args.reason or "unfrozen by operator")
    elif args.command == "restrict":
        manager.restrict(symbol)
        changed = True
    else:
        manager.unrestrict(symbol)
        changed = True
    _check_saved(manager)
    _emit(
        args,
        {"symbol": symbol, "action": args.command, "changed": changed},
        f"{args.command} {symbol}: {'done' if changed else 'was not frozen'}",
    )
    return EXIT_OK


def _freeze_hours(args: argparse.Namespace) -> float | None:
    """``--for 2h`` or ``--until 2026-12-01T09:00Z`` as hours from now; None: never expires."""
    try:
        if args.for_:
            return parse_duration(args.for_) / 3600
        if args.until:
            hours = (parse_aware_time(args.until) - time.time()) / 3600
            if hours <= 0:
                raise ValueError(f"--until {args.until} is in the past")
            return hours
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return None


def cmd_halt(args: argparse.Namespace) -> int:
    manager = _manager(args, must_exist=args.command == "resume")
    if args.command == "halt":
        was = manager.halted
        halt = manager.halt(args.reason)
        _check_saved(manager)
        text = (
            f"trading halted ({'reason replaced' if was else 'was running'}): entries refused on "
            "every symbol by every guard on this state; exits allowed"
        )
        _emit(args, {"action": "halt", "changed": True, "halt": halt.as_dict()}, text)
        return EXIT_OK
    changed = manager.resume(args.reason)
    _check_saved(manager)
    text = "trading resumed" if changed else "no change: trading was not halted"
    _emit(args, {"action": "resume", "changed": changed}, text)
    return EXIT_OK


def cmd_acknowledge_damage(args: argparse.Namespace) -> int:
    manager = _manager(args, must_exist=True)
    marks = manager.acknowledge_damage()
    _check_saved(manager)
    _emit(
        args,
        {"acknowledged": marks},
        f"acknowledged {len(marks)} damaged change(s); entries resume"
        if marks
        else "no unattributed damage to acknowledge",
    )
    return EXIT_OK


class ProgressBar:
    """Positions valued so far, on stderr, for scans of at least ``minimum`` positions (stdout stays
    for results).

    A terminal gets one redrawn bar; a log file or pipe gets a line every tenth of the way.
    """

    def __init__(self, stream: TextIO, minimum: int = 20, width: int = 30) -> None:
        self.stream, self.minimum, self.width = stream, minimum, width
        self._last_tenth = -1

    def __call__(self, event: GuardEvent) -> None:
        if event.kind != "scan" or event.detail["total"] < self.minimum:
            return
        done, total = event.detail["done"], event.detail["total"]
        if self.stream.isatty():
            filled = self.width * done // total
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} positions valued"
            )
            if done == total:
                self.stream.write("\n")
        else:
            tenth = 10 * done // total
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(f"{done}/{total} positions valued\n")
        self.stream.flush()


def _guard(args: argparse.Namespace) -> GuardedBroker:
    config = _config(args)
    # degrades like a bot's: health reports an unreachable Redis as an alert
    store = store_from_config(config)
    args.stores.append(store)
    return GuardedBroker(
        make_broker(args.broker), config, store=store, on_event=ProgressBar(sys.stderr)
    )


def cmd_health(args: argparse.Namespace) -> int:
    health = _guard(args).health()
    _emit(
        args,
        health,
        "OK" if health["ok"] else "ALERT\n" + "\n".join(f"  - {a}" for a in health["alerts"]),
    )
    return EXIT_OK if health["ok"] else EXIT_ALERT


def cmd_dust(args: argparse.Namespace) -> int:
    result = _guard(args).dust(dry_run=args.dry_run, threshold_usd=args.threshold)
    figures = {k: v for k, v in result.items() if k != "positions"} | {
        "positions": result["positions"]
    }
    table = [
        f"{p['symbol']:<12} {p['status']:<9} ${p['usd_value'] or 0:>10.4f}  {p['reason']}"
        for p in result["positions"]
    ]
    _emit(
        args,
        figures,
        "\n".join(
            [
                *table,
                f"closed {result['closed']}, failed {result['failed']}, cleaned "
                f"${result['total_value_cleaned']:.2f}",
            ]
        ),
    )
    return EXIT_ALERT if result["failed"] else EXIT_OK


def cmd_normalize(args: argparse.Namespace) -> int:
    result = _guard(args).normalize(dry_run=not args.execute, minimum_position_usd=args.minimum)
    table = [
        f"{a['symbol']:<12} {a['action']:<16} {a['status']:<9} ${a['usd_value'] or 0:>9.2f}"
        for a in result["actions"]
    ]
    summary = (
        f"actions required {result['actions_required']}, "
        f"executed {result['actions_executed']}, failed {result['actions_failed']}"
    )
    _emit(args, result, "\n".join([*table, summary]))
    return EXIT_ALERT if result["actions_failed"] else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Every seed component on the paper broker with injected faults; simulated time, so it takes a
    second."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)  # setLevel, not assignment: it clears the loggers' level caches
    try:
        return _demo(args)
    finally:
        root.handlers = saved[1]
        root.setLevel(saved[0])


def _demo(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="broker-guard-demo-")
    clock = FakeClock()
    broker = PaperBroker(prices=DEMO_PRICES, positions=DEMO_POSITIONS, cash=1000.0)
    config = GuardConfig.load(args.config, data_dir=data_dir, freeze={"auto_unfreeze": True})
    # typed as the broker it wraps
    guard: Any = GuardedBroker(broker, config, clock=clock, sleep=clock.sleep)

    def screen(title: str) -> None:
        print(f"\n{'#' * 70}\n# {title}\n{'#' * 70}")

    screen("1/5 Enhanced Balance Fetcher: two network errors, then success")
    broker.fail_next("get_account_balance", 2, "network")
    print(f"balance = ${guard.get_account_balance():.2f} (simulated waits: {clock.sleeps})")
    screen(
        "2/5 Enhanced Balance Fetcher: the broker stays down, fallback to the last known balance"
    )
    clock.advance(5 * 60)
    broker.fail_next("get_account_balance", 3, "network")
    print(f"balance = ${guard.get_account_balance():.2f}")
    screen(
        "3/5 Symbol Freeze Manager: a delisted coin freezes, a restricted one is refused, a probe "
        "unfreezes"
    )
    broker.delist("LUNA-USD")
    for _ in range(3):
        try:
            guard.get_current_price("LUNA-USD")
        except Exception as exc:
            print(f"price call failed: {exc}")
    for symbol, side in (("LUNA-USD", "buy"), ("AUT-USD", "buy")):
        try:
            guard.place_market_order(symbol, side, 1.0)
        except BrokerGuardError as exc:
            print(f"REFUSED {side} {symbol}: {type(exc).__name__}")
    broker.relist("LUNA-USD")
    clock.advance(24 * 3600)
    print(
        f"after the 24h cooldown, the probe call returns {guard.get_current_price('LUNA-USD')}: "
        f"LUNA-USD unfrozen"
    )
    screen("4/5 Broker Dust Cleanup: dry run, then for real")
    guard.dust(dry_run=True)
    guard.dust(dry_run=False)
    screen("5/5 User Account Normalization: dry run, then for real")
    guard.normalize(dry_run=True)
    guard.normalize(dry_run=False)
    guard.get_account_balance()  # the broker is back: the balance alerts clear
    health = guard.health()
    print(
        f"\nhealth: {'OK' if health['ok'] else health['alerts']}; orders placed: "
        f"{len(broker.orders)}; data dir: {data_dir}"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker-guard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker", default="paper", help="paper (default), ccxt:<exchange id>, or module:factory"
    )
    parser.add_argument(
        "--data-dir",
        help="state directory (default: guard.data_dir, $BROKER_GUARD_DATA_DIR, ./data)",
    )
    parser.add_argument(
        "--config", help="config file (seed format; default config/cleanup_config.json)"
    )
    parser.add_argument(
        "--store",
        dest="store_url",
        metavar="URL",
        help="shared state in Redis, e.g. redis://host:6379/0 (default: guard.store_url, "
        "$BROKER_GUARD_STORE_URL, JSON files)",
    )
    parser.add_argument(
        "--store-prefix",
        help="Redis key prefix of the deployment (default: guard.store_prefix, broker_guard)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="show every component on the paper broker")
    sub.add_parser("status", help="frozen symbols, pending failures, balances, persistence")
    sub.add_parser("health", help="exit 1 when an alert is raised")
    for name in ("halt", "resume"):
        p = sub.add_parser(
            name,
            help="refuse entries on every symbol, fleet-wide, until resumed (exits, prices and "
            "balances still pass)"
            if name == "halt"
            else "lift the halt",
        )
        p.add_argument("--reason", required=True, help="why: recorded with who and when")
    for name in ("freeze", "unfreeze", "restrict", "unrestrict"):
        about = {
            "freeze": "freeze a symbol for every guard on this state: entries refused, exits "
            "allowed. Never expires unless given --for or --until; then one price call probes it",
        }
        text = about.get(name, f"{name} a symbol in the shared state")
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("symbol")
        p.add_argument("--reason", default="")
        if name == "freeze":
            expiry = p.add_mutually_exclusive_group()
            expiry.add_argument(
                "--for", dest="for_", metavar="DURATION", help="probe it after 90s, 30m, 2h, 1d"
            )
            expiry.add_argument(
                "--until", metavar="TIME", help="probe it after an ISO time with offset"
            )
    sub.add_parser(
        "acknowledge-damage",
        help="after reviewing damaged state changes that named no symbol (see health), let "
        "entries resume",
    )
    dust = sub.add_parser("dust", help="close positions under the dust threshold")
    dust.add_argument("--dry-run", action="store_true", default=None)
    dust.add_argument("--threshold", type=float)
    norm = sub.add_parser(
        "normalize", help="close or flag positions under the minimum (dry run unless --execute)"
    )
    norm.add_argument("--dry-run", action="store_true", default=True)
    norm.add_argument("--execute", action="store_true", help="really place the orders")
    norm.add_argument("--minimum", type=float)
    return parser


COMMANDS = {
    "demo": cmd_demo,
    "status": cmd_status,
    "health": cmd_health,
    "halt": cmd_halt,
    "resume": cmd_halt,
    "freeze": cmd_symbol,
    "unfreeze": cmd_symbol,
    "restrict": cmd_symbol,
    "unrestrict": cmd_symbol,
    "acknowledge-damage": cmd_acknowledge_damage,
    "dust": cmd_dust,
    "normalize": cmd_normalize,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.stores = []
    if args.command != "demo":
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError) as exc:
        print(f"broker-guard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"broker-guard: {exc}", file=sys.stderr)
        return EXIT_ALERT
    except BrokerGuardError as exc:
        print(f"broker-guard: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except Exception as exc:
        print(f"broker-guard: the broker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BROKER
    finally:
        for store in args.stores:
            if hasattr(store, "close"):
                store.close()


if __name__ == "__main__":
    sys.exit(main())
