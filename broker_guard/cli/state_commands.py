"""The commands that act on the shared state alone: status, health, halt and resume, freeze and
its kin, forget, init. They never load a broker or the guard's proxy."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from broker_guard.cli.base import EXIT_ALERT, EXIT_OK, UsageError, emit
from broker_guard.clock import parse_aware_time, parse_duration, utc_iso
from broker_guard.config import GuardConfig
from broker_guard.errors import StoreError
from broker_guard.events import actor
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guard.heartbeat import forget
from broker_guard.liquidation.health import fleet_health
from broker_guard.state.files import make_private_dir
from broker_guard.state.select import store_from_config
from broker_guard.symbols import canonical_symbol


def load_config(args: argparse.Namespace) -> GuardConfig:
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


def existing_dir(config: GuardConfig) -> GuardConfig:
    """A data dir the command would otherwise create is a typo no bot reads: refused."""
    if config.guard.store_url is None and not config.data_dir.is_dir():
        raise UsageError(
            f"data dir {config.data_dir} does not exist: pass the bots' --data-dir (or set "
            "BROKER_GUARD_DATA_DIR); `broker-guard init` creates a new one"
        )
    return config


def open_manager(
    args: argparse.Namespace, config: GuardConfig | None = None
) -> SymbolFreezeManager:
    """The freeze manager on the configured store; an unreachable Redis is an error here, never
    memory."""
    config = config or existing_dir(load_config(args))
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


def cmd_status(args: argparse.Namespace) -> int:
    manager = open_manager(args)
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
    emit(args, payload, "\n".join(lines))
    return EXIT_OK


def cmd_symbol(args: argparse.Namespace) -> int:
    command = args.command
    symbol = _symbol(args.symbol, pair=command in ("freeze", "restrict"))
    manager = open_manager(args)
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
    emit(args, {"symbol": symbol, "action": command, "changed": changed}, f"{symbol}: {said}")
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
            return _duration(args.for_) / 3600
        if args.until:
            hours = (parse_aware_time(args.until) - time.time()) / 3600
            if hours <= 0:
                raise ValueError(f"--until {args.until} is in the past")
            return hours
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return None


def cmd_halt(args: argparse.Namespace) -> int:
    manager = open_manager(args)
    if args.command == "halt":
        was = manager.halted
        halt = manager.halt(args.reason)
        _check_saved(manager)
        text = (
            f"trading halted ({'reason replaced' if was else 'was running'}): entries refused on "
            "every symbol by every guard on this state; exits allowed"
        )
        emit(args, {"action": "halt", "changed": True, "halt": halt.as_dict()}, text)
        return EXIT_OK
    changed = manager.resume(args.reason)
    _check_saved(manager)
    text = "trading resumed" if changed else "no change: trading was not halted"
    emit(args, {"action": "resume", "changed": changed}, text)
    return EXIT_OK


def cmd_acknowledge_damage(args: argparse.Namespace) -> int:
    manager = open_manager(args)
    marks = manager.acknowledge_damage()
    _check_saved(manager)
    emit(
        args,
        {"acknowledged": marks},
        f"acknowledged {len(marks)} damaged change(s); entries resume"
        if marks
        else "no unattributed damage to acknowledge",
    )
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """Every bot's heartbeat and the shared state, checked; exit 1 on any alert."""
    if args.broker is not None:
        print(
            "broker-guard: health reads the bots' heartbeats from the shared state; --broker is "
            "not used",
            file=sys.stderr,
        )
    config = existing_dir(load_config(args))
    manager = open_manager(args, config)
    window = _duration(args.not_seen) if args.not_seen else None
    health = fleet_health(manager, config, args.clock(), not_seen_seconds=window)
    lines = [
        f"{'ok   ' if c['ok'] else 'ALERT'} {c['check']}: {c['why']}" for c in health["checks"]
    ]
    emit(args, health, "\n".join(["OK" if health["ok"] else "ALERT", *lines]))
    return EXIT_OK if health["ok"] else EXIT_ALERT


def cmd_forget(args: argparse.Namespace) -> int:
    """Remove a retired bot's heartbeat, so health stops reporting it as not seen."""
    manager = open_manager(args)
    changed = forget(manager.store, args.name)
    if changed:
        _record(manager, "forget", None, f"bot {args.name}: " + (args.reason or ""))
    said = "forgotten" if changed else "no change: no heartbeat of that name"
    emit(args, {"name": args.name, "action": "forget", "changed": changed}, f"{args.name}: {said}")
    return EXIT_OK


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_init(args: argparse.Namespace) -> int:
    """Create the data dir (private) for bots and the CLI to share."""
    config = load_config(args)
    if config.guard.store_url is not None:
        emit(args, {"changed": False}, "no change: the state is in Redis, nothing to create")
        return EXIT_OK
    existed = config.data_dir.is_dir()
    make_private_dir(config.data_dir)
    said = "no change: it exists" if existed else "created"
    emit(
        args,
        {"data_dir": str(config.data_dir), "changed": not existed},
        f"{config.data_dir}: {said}",
    )
    return EXIT_OK


COMMANDS = {
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
}
