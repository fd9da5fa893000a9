"""The operator's command line: broker-guard COMMAND (or python -m broker_guard COMMAND).

Commands: demo, init, status, health, halt, resume, freeze, unfreeze, restrict,
unrestrict, acknowledge-damage, forget, dust, normalize, serve. Options go before or
after the command. Every change command says what it changed, or "no change".
health reads the bots' heartbeats from the shared state (no --broker).

Exit codes:
  0  success
  1  an alert is raised (health), an action failed, or the state store cannot
     be reached (nothing was changed)
  2  bad usage or configuration: an unknown broker spec, a bad symbol, missing
     credentials, a data dir that does not exist (only init and a starting
     guard create one), an order run not confirmed
  3  the broker failed
"""

from __future__ import annotations

import argparse
import contextlib
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

from broker_guard import __version__
from broker_guard.clock import Clock, FakeClock, parse_aware_time, parse_duration, utc_iso
from broker_guard.config import GuardConfig
from broker_guard.errors import BrokerGuardError, ConfigError, StoreError
from broker_guard.events import GuardEvent, actor
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guard.heartbeat import forget
from broker_guard.guarded import GuardedBroker, guard_of, wrap
from broker_guard.liquidation.health import fleet_health
from broker_guard.paper import PaperBroker
from broker_guard.state.files import make_private_dir
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


def make_broker(spec: str | None) -> Any:
    """``paper`` (default), ``ccxt:<exchange id>`` (keys from
    BROKER_GUARD_API_KEY/_SECRET/_PASSWORD), or ``module:factory``."""
    if spec in (None, "paper"):
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
    assert spec is not None
    module_name, sep, factory = spec.partition(":")
    if not sep or not module_name or not factory:
        raise UsageError(
            f"unknown broker spec {spec!r}: use paper, ccxt:<exchange id> or module:factory"
        )
    try:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # a module in the current directory, as `python -m`
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


def _existing(config: GuardConfig) -> GuardConfig:
    """A data dir the command would otherwise create is a typo no bot reads: refused."""
    if config.guard.store_url is None and not config.data_dir.is_dir():
        raise UsageError(
            f"data dir {config.data_dir} does not exist: pass the bots' --data-dir (or set "
            "BROKER_GUARD_DATA_DIR); `broker-guard init` creates a new one"
        )
    return config


def _manager(args: argparse.Namespace, config: GuardConfig | None = None) -> SymbolFreezeManager:
    """The freeze manager on the configured store; an unreachable Redis is an error here, never
    memory."""
    config = config or _existing(_config(args))
    store = store_from_config(config, degrade=False)
    args.stores.append(store)
    # every read fresh: the CLI's reads are few, and serve's scrapes must see the latest change
    manager = SymbolFreezeManager(config.freeze, store=store, refresh_interval=0.0)
    _check_saved(manager)
    return manager


def _check_saved(manager: SymbolFreezeManager) -> None:
    """The manager keeps a change it could not save in memory, which is right for a bot and wrong
    for an operator."""
    problem = manager.get_stats()["store_problem"]
    if problem:
        raise StoreError(f"state store {manager.store.health().location}: {problem}")


def _symbol(text: str, *, pair: bool = True) -> str:
    """A symbol to act on; one that adds a freeze or restriction must name a pair (a bare
    ``BTCUSDT`` would match no order on ``BTC/USDT``); one that lifts it may be any spelling the
    guard froze (``AAPL``)."""
    try:
        canonical_symbol(text)
    except ValueError as exc:
        raise UsageError(f"bad symbol {text!r}: {exc}") from None
    if pair and "/" not in canonical_symbol(text):
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
    command = args.command
    symbol = _symbol(args.symbol, pair=command in ("freeze", "restrict"))
    manager = _manager(args)
    if command == "freeze":
        was = manager.is_frozen(symbol)
        manager.freeze(symbol, args.reason or "frozen by operator", for_hours=_freeze_hours(args))
        changed, said = True, "frozen again: reason and expiry replaced" if was else "frozen"
    elif command == "unfreeze":
        changed = manager.unfreeze_symbol(symbol, args.reason or "unfrozen by operator")
        said = "unfrozen" if changed else "no change: it was not frozen"
    elif command == "restrict":
        changed = not manager.is_restricted(symbol)
        manager.restrict(symbol)
        said = "restricted" if changed else "no change: it was already restricted"
    else:
        changed = manager.is_restricted(symbol)
        manager.unrestrict(symbol)
        said = "unrestricted" if changed else "no change: it was not restricted"
    _check_saved(manager)
    if changed:
        _record(manager, command, symbol, args.reason)
    _emit(args, {"symbol": symbol, "action": command, "changed": changed}, f"{symbol}: {said}")
    return EXIT_OK


def _record(manager: SymbolFreezeManager, action: str, symbol: str | None, reason: str) -> None:
    """An operator's change, in the shared log ``operator`` (who, when, what, why)."""
    manager.store.append(
        "operator",
        {
            "at": utc_iso(time.time()),
            "by": actor(),
            "action": action,
            "symbol": symbol,
            "reason": reason or "",
        },
    )


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
    manager = _manager(args)
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
    manager = _manager(args)
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
    broker = make_broker(args.broker)  # a bad broker spec is named before a missing data dir
    # the CLI's guard is not a bot: no heartbeat, which would be "not seen" once it exits
    config = _existing(_config(args)).replace(guard={"heartbeat_seconds": 0})
    # degrades like a bot's: health reports an unreachable Redis as an alert
    store = store_from_config(config)
    args.stores.append(store)
    return GuardedBroker(broker, config, store=store, on_event=ProgressBar(sys.stderr))


def cmd_health(args: argparse.Namespace) -> int:
    """Every bot's heartbeat and the shared state, checked; exit 1 on any alert."""
    if args.broker is not None:
        print(
            "broker-guard: health reads the bots' heartbeats from the shared state; --broker is "
            "not used",
            file=sys.stderr,
        )
    config = _existing(_config(args))
    manager = _manager(args, config)
    window = _duration(args.not_seen) if args.not_seen else None
    health = fleet_health(manager, config, args.clock(), not_seen_seconds=window)
    lines = [
        f"{'ok   ' if c['ok'] else 'ALERT'} {c['check']}: {c['why']}" for c in health["checks"]
    ]
    _emit(args, health, "\n".join(["OK" if health["ok"] else "ALERT", *lines]))
    return EXIT_OK if health["ok"] else EXIT_ALERT


def cmd_forget(args: argparse.Namespace) -> int:
    """Remove a retired bot's heartbeat, so health stops reporting it as not seen."""
    manager = _manager(args)
    changed = forget(manager.store, args.name)
    if changed:
        _record(manager, "forget", None, f"bot {args.name}: " + (args.reason or ""))
    said = "forgotten" if changed else "no change: no heartbeat of that name"
    _emit(args, {"name": args.name, "action": "forget", "changed": changed}, f"{args.name}: {said}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """/metrics and /health over HTTP until interrupted (the broker-guard[metrics] extra)."""
    try:
        from broker_guard.metrics import make_server  # optional: prometheus_client
    except ImportError:
        raise UsageError(
            "serve needs prometheus_client: pip install 'broker-guard[metrics]'"
        ) from None
    config = _existing(_config(args))
    manager = _manager(args, config)
    try:
        server = make_server(manager, config, args.host, args.port, args.clock)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving http://{host}:{port}/metrics and /health (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_dust(args: argparse.Namespace) -> int:
    guard = _guard(args)
    if args.execute and not args.dry_run and not _confirmed(args, "dust --execute"):
        print("nothing done: not confirmed (pass --yes to skip the question)", file=sys.stderr)
        return EXIT_USAGE
    result = guard.dust(
        dry_run=not args.execute or bool(args.dry_run), threshold_usd=args.threshold
    )
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
    guard = _guard(args)
    if args.execute and not _confirmed(args, "normalize --execute"):
        print("nothing done: not confirmed (pass --yes to skip the question)", file=sys.stderr)
        return EXIT_USAGE
    result = guard.normalize(dry_run=not args.execute, minimum_position_usd=args.minimum)
    table = [
        f"{a['symbol']:<12} {a['action']:<16} {a['status']:<9} ${a['usd_value'] or 0:>9.2f}"
        for a in result["actions"]
    ]
    summary = (
        f"actions required {result['actions_required']}, "
        f"executed {result['actions_executed']}, failed {result['actions_failed']}"
    )
    _emit(args, result, "\n".join([*table, summary]))
    failed = result.get("account_errors") or {}
    for account, why in failed.items():
        print(f"broker-guard: the broker failed for {account}: {why}", file=sys.stderr)
    if failed:
        return EXIT_BROKER
    return EXIT_ALERT if result["actions_failed"] else EXIT_OK


def _confirmed(args: argparse.Namespace, what: str) -> bool:
    """Real orders from a terminal: asked first, unless ``--yes``. A script (no terminal) is not
    asked: ``--execute`` is its consent."""
    if args.yes or not sys.stdin.isatty():
        return True
    answer = input(f"{what} places real orders at the broker. Continue? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_init(args: argparse.Namespace) -> int:
    """Create the data dir (private) for bots and the CLI to share."""
    config = _config(args)
    if config.guard.store_url is not None:
        _emit(args, {"changed": False}, "no change: the state is in Redis, nothing to create")
        return EXIT_OK
    existed = config.data_dir.is_dir()
    make_private_dir(config.data_dir)
    said = "no change: it exists" if existed else "created"
    _emit(
        args,
        {"data_dir": str(config.data_dir), "changed": not existed},
        f"{config.data_dir}: {said}",
    )
    return EXIT_OK


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
        _emit(args, summary, "")
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


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """The options every command takes; on each subcommand too, so they go before or after it
    (there ``default`` is SUPPRESS: an option given before the command is not reset)."""
    parser.add_argument(
        "--broker",
        default=default,
        help="for dust and normalize: paper (default), ccxt:<exchange id>, or module:factory",
    )
    parser.add_argument(
        "--data-dir",
        default=default,
        help="state directory (default: guard.data_dir, $BROKER_GUARD_DATA_DIR, ./data)",
    )
    parser.add_argument(
        "--config",
        default=default,
        help="config file (seed format; default config/cleanup_config.json)",
    )
    parser.add_argument(
        "--store",
        dest="store_url",
        metavar="URL",
        default=default,
        help="shared state in Redis, e.g. redis://host:6379/0 (default: guard.store_url, "
        "$BROKER_GUARD_STORE_URL, JSON files)",
    )
    parser.add_argument(
        "--store-prefix",
        default=default,
        help="Redis key prefix of the deployment (default: guard.store_prefix, broker_guard)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default or False, help="machine-readable output"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker-guard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"broker-guard {__version__}")
    _global_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common])

    command("demo", "show every component on the paper broker")
    command("init", "create the data dir the bots and this command share")
    command("status", "frozen symbols, pending failures, balances, persistence")
    health = command(
        "health",
        "check every bot's heartbeat (seen lately, balance answering, store saving), the halt, "
        "the frozen symbols and the state; exit 1 when an alert is raised",
    )
    health.add_argument(
        "--not-seen",
        metavar="DURATION",
        help="alert on a bot not seen for this long: 90s, 10m, 1h (default: "
        "guard.not_seen_minutes, 10m)",
    )
    for name in ("halt", "resume"):
        p = command(
            name,
            "refuse entries on every symbol, fleet-wide, until resumed (exits, prices and "
            "balances still pass)"
            if name == "halt"
            else "lift the halt",
        )
        p.add_argument("--reason", required=True, help="why: recorded with who and when")
    about = {
        "freeze": "freeze a symbol for every guard on this state: entries refused, exits "
        "allowed. Never expires unless given --for or --until; then one price call probes it",
        "unfreeze": "lift a freeze, in the spelling the guard froze it (BTC-USD, AAPL)",
        "restrict": "never trade a symbol: every call on it refused",
        "unrestrict": "lift a restriction",
    }
    for name, text in about.items():
        p = command(name, text)
        p.add_argument("symbol")
        p.add_argument("--reason", default="", help="why: recorded in the operator log")
        if name == "freeze":
            expiry = p.add_mutually_exclusive_group()
            expiry.add_argument(
                "--for", dest="for_", metavar="DURATION", help="probe it after 90s, 30m, 2h, 1d"
            )
            expiry.add_argument(
                "--until", metavar="TIME", help="probe it after an ISO time with offset"
            )
    forget_cmd = command(
        "forget", "remove a retired bot's heartbeat, so health stops reporting it not seen"
    )
    forget_cmd.add_argument("name", help="the bot's name as health shows it")
    forget_cmd.add_argument("--reason", default="", help="why: recorded in the operator log")
    command(
        "acknowledge-damage",
        "after reviewing damaged state changes that named no symbol (see health), let "
        "entries resume",
    )
    serve = command(
        "serve",
        "serve /metrics (Prometheus) and /health (200 ok, 503 on an alert; JSON) from the "
        "shared state; needs broker-guard[metrics]",
    )
    serve.add_argument("--port", type=int, default=9464, help="0 picks a free port (default 9464)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    dust = command("dust", "close positions under the dust threshold (dry run unless --execute)")
    dust.add_argument("--dry-run", action="store_true", default=None, help="the default")
    dust.add_argument("--execute", action="store_true", help="really place the orders")
    dust.add_argument("--threshold", type=float)
    dust.add_argument("--yes", action="store_true", help="do not ask before placing orders")
    norm = command(
        "normalize", "close or flag positions under the minimum (dry run unless --execute)"
    )
    norm.add_argument("--dry-run", action="store_true", default=True, help="the default")
    norm.add_argument("--execute", action="store_true", help="really place the orders")
    norm.add_argument("--minimum", type=float)
    norm.add_argument("--yes", action="store_true", help="do not ask before placing orders")
    return parser


COMMANDS = {
    "demo": cmd_demo,
    "init": cmd_init,
    "status": cmd_status,
    "health": cmd_health,
    "halt": cmd_halt,
    "resume": cmd_halt,
    "freeze": cmd_symbol,
    "unfreeze": cmd_symbol,
    "restrict": cmd_symbol,
    "unrestrict": cmd_symbol,
    "acknowledge-damage": cmd_acknowledge_damage,
    "forget": cmd_forget,
    "serve": cmd_serve,
    "dust": cmd_dust,
    "normalize": cmd_normalize,
}


def main(argv: Sequence[str] | None = None, *, clock: Clock = time.time) -> int:
    """Run one command; ``clock`` is injectable for tests (health's "last seen")."""
    args = build_parser().parse_args(argv)
    args.stores = []
    args.clock = clock
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
