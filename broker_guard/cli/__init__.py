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
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker_guard import __version__
from broker_guard.cli.base import EXIT_ALERT, EXIT_BROKER, EXIT_USAGE, UsageError
from broker_guard.errors import BrokerGuardError, ConfigError, StoreError


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


BROKER_COMMANDS = ("dust", "normalize", "serve")


def _commands_of(command: str) -> Mapping[str, Callable[[argparse.Namespace], int]]:
    """The module that runs ``command``, loaded now: the state commands never load the guard's
    proxy or a broker, and --help loads neither."""
    if command == "demo":
        from broker_guard.cli import demo

        return demo.COMMANDS
    if command in BROKER_COMMANDS:
        from broker_guard.cli import broker_commands

        return broker_commands.COMMANDS
    from broker_guard.cli import state_commands

    return state_commands.COMMANDS


def main(argv: Sequence[str] | None = None, *, clock: Callable[[], float] = time.time) -> int:
    """Run one command; ``clock`` is injectable for tests (health's "last seen")."""
    args = build_parser().parse_args(argv)
    args.stores = []
    args.clock = clock
    if args.command != "demo":
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        # the commands load the guard: not before the command line is known to be right
        return _commands_of(args.command)[args.command](args)
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


__all__ = ["build_parser", "main"]
