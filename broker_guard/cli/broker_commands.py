"""The commands that need a broker or serve the state over HTTP: dust, normalize (through a guard
on the broker --broker names) and serve."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, TextIO

from broker_guard.cli.base import EXIT_ALERT, EXIT_BROKER, EXIT_OK, EXIT_USAGE, UsageError, emit
from broker_guard.cli.demo import DEMO_POSITIONS, DEMO_PRICES
from broker_guard.cli.state_commands import existing_dir, load_config, open_manager
from broker_guard.events import GuardEvent
from broker_guard.guarded import GuardedBroker
from broker_guard.paper import PaperBroker
from broker_guard.state.select import store_from_config


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
    config = existing_dir(load_config(args)).replace(guard={"heartbeat_seconds": 0})
    # degrades like a bot's: health reports an unreachable Redis as an alert
    store = store_from_config(config)
    args.stores.append(store)
    return GuardedBroker(broker, config, store=store, on_event=ProgressBar(sys.stderr))


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
    emit(
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
    emit(args, result, "\n".join([*table, summary]))
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


def cmd_serve(args: argparse.Namespace) -> int:
    """/metrics and /health over HTTP until interrupted (the broker-guard[metrics] extra)."""
    try:
        from broker_guard.metrics import make_server  # optional: prometheus_client
    except ImportError:
        raise UsageError(
            "serve needs prometheus_client: pip install 'broker-guard[metrics]'"
        ) from None
    config = existing_dir(load_config(args))
    manager = open_manager(args, config)
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


COMMANDS = {
    "dust": cmd_dust,
    "normalize": cmd_normalize,
    "serve": cmd_serve,
}
