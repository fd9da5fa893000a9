"""Health: the seed's monitoring figures and the alerts an operator or cron job acts on.

``guard_health`` is one guard's own view, in its process (``guard.health()``).
``fleet_health`` is the operator's, from the shared state alone: every bot's
heartbeat, the halt, the frozen symbols and the store, each check with why
(``broker-guard health``, ``serve``'s ``/health``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from broker_guard.clock import age_seconds, utc_iso
from broker_guard.guard.heartbeat import CONSECUTIVE_ERRORS_ALERT, read_heartbeats

if TYPE_CHECKING:  # types only: the CLI's health loads neither the guard nor its proxy
    from broker_guard.config import GuardConfig
    from broker_guard.guard.context import GuardContext
    from broker_guard.guard.freeze_manager import SymbolFreezeManager


def guard_health(ctx: GuardContext) -> dict[str, Any]:
    config = ctx.config
    stats = ctx.freeze.get_stats()
    balance = ctx.balance.get_last_known_balance(ctx.account)
    errors = ctx.balance.account_health().get(ctx.account)
    persistence = ctx.store.health().as_dict()
    consecutive = errors.consecutive_errors if errors else 0
    alerts = [
        *trading_alerts(stats, config.freeze.alert_frozen_count),
        *balance_alerts(balance, consecutive, config.balance.cache_timeout_minutes),
        *state_alerts(stats, persistence),
    ]
    return {
        "ok": not alerts,
        "alerts": alerts,
        "account": ctx.account,
        "halted": stats["halted"],
        "frozen_count": stats["frozen_count"],
        "frozen_symbols": stats["frozen_symbols"],
        "manual_review_required": stats["manual_review_required"],
        "pending_freezes": stats["pending_freezes"],
        "restricted_symbols": stats["restricted_symbols"],
        "balance_age_minutes": balance["age_minutes"] if balance else None,
        "consecutive_balance_errors": consecutive,
        "last_balance_error": errors.last_error if errors else None,
        "persistence": persistence,
    }


def trading_alerts(stats: dict[str, Any], frozen_limit: int) -> list[str]:
    return [*halt_alerts(stats), *frozen_alerts(stats, frozen_limit)]


def halt_alerts(stats: dict[str, Any]) -> list[str]:
    halt = stats["halted"]
    if not halt:
        return []
    return [
        f"Trading halted since {halt['at']} by {halt['by']}: {halt['reason']} (entries "
        "refused, exits allowed; `broker-guard resume --reason ...`)"
    ]


def frozen_alerts(stats: dict[str, Any], frozen_limit: int) -> list[str]:
    if stats["frozen_count"] <= frozen_limit:
        return []
    return [f"High number of frozen symbols: {stats['frozen_count']} (limit {frozen_limit})"]


def balance_alerts(
    balance: dict[str, Any] | None, consecutive: int, cache_minutes: float
) -> list[str]:
    alerts = []
    if balance and balance["age_minutes"] is None:
        alerts.append("Balance data has an unknown age (saved under a clock ahead of this one)")
    elif balance and balance["age_minutes"] > cache_minutes:
        alerts.append(f"Balance data is old: {balance['age_minutes']:.1f} minutes")
    if consecutive >= CONSECUTIVE_ERRORS_ALERT:
        alerts.append(f"Consecutive balance fetch errors: {consecutive}")
    return alerts


def state_alerts(stats: dict[str, Any], persistence: dict[str, Any]) -> list[str]:
    alerts = []
    if not persistence["ok"] or stats["store_problem"]:
        why = (
            "; ".join(f"{k}: {v}" for k, v in persistence["degraded"].items())
            or stats["store_problem"]
        )
        alerts.append(f"Persistence degraded, state kept in memory or unread: {why}")
    if persistence["recovered"]:
        alerts.append(
            f"State restored from the last good copy (damaged file kept as .corrupt-*): "
            f"{', '.join(persistence['recovered'])}"
        )
    if persistence["quarantined"]:
        alerts.append(
            "Damaged state kept aside for review (*.quarantine.jsonl): "
            + "; ".join(persistence["quarantined"])
        )
    if stats["damaged_records"]:
        alerts.append(
            "State records damaged, their symbols held frozen for review: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(stats["damaged_records"].items()))
        )
    if stats["unattributed_damage"]:
        alerts.append(
            "Entries refused on every symbol: damaged state changes name no symbol (review "
            "them, then `broker-guard acknowledge-damage`): "
            + "; ".join(f"{k}: {v}" for k, v in sorted(stats["unattributed_damage"].items()))
        )
    return alerts


def fleet_health(
    manager: SymbolFreezeManager,
    config: GuardConfig,
    now: float,
    *,
    not_seen_seconds: float | None = None,
) -> dict[str, Any]:
    """Every check on the shared state, with why: the halt, the frozen symbols, the store, and for
    each bot's heartbeat whether it was seen lately, its balance and its store. ``ok`` is False
    when any check fails; ``alerts`` are the failed checks' reasons."""
    stats = manager.get_stats()
    persistence = manager.store.health().as_dict()
    limit = config.freeze.alert_frozen_count
    checks = [
        _check("halt", halt_alerts(stats), "trading not halted"),
        _check(
            "frozen_symbols",
            frozen_alerts(stats, limit),
            f"{stats['frozen_count']} frozen (alert above {limit})",
        ),
        _check("persistence", state_alerts(stats, persistence), "state readable and saved"),
    ]
    window = config.guard.not_seen_minutes * 60 if not_seen_seconds is None else not_seen_seconds
    bots = {
        name: bot_view(record, now)
        for name, record in sorted(read_heartbeats(manager.store).items())
    }
    if not bots:
        checks.append(
            {
                "check": "bots",
                "ok": False,
                "why": "no guard has written a heartbeat to this state: are the bots on this "
                "data dir or store (and on broker_guard with heartbeats)?",
            }
        )
    for name, view in bots.items():
        checks += bot_checks(name, view, window, config.balance.cache_timeout_minutes)
    alerts = [c["why"] for c in checks if not c["ok"]]
    return {
        "ok": not alerts,
        "alerts": alerts,
        "checked_at": utc_iso(now),
        "checks": checks,
        "bots": bots,
        "halted": stats["halted"],
        "frozen_count": stats["frozen_count"],
        "frozen_symbols": stats["frozen_symbols"],
        "not_seen_seconds": window,
        "persistence": persistence,
    }


def _check(name: str, alerts: list[str], fine: str) -> dict[str, Any]:
    return {"check": name, "ok": not alerts, "why": "; ".join(alerts) if alerts else fine}


def bot_view(record: Any, now: float) -> dict[str, Any]:
    """A heartbeat as health shows it: the record plus how long ago it was written (None: the
    record is damaged, ``problem`` says how)."""
    if not isinstance(record, dict):
        return {"problem": f"not a heartbeat record: {type(record).__name__}"}
    seen = record.get("seen_at")
    if isinstance(seen, bool) or not isinstance(seen, (int, float)) or not math.isfinite(seen):
        return {**record, "problem": "heartbeat has no valid seen_at"}
    ago = age_seconds(seen, now)
    if ago is None:
        return {
            **record,
            "problem": f"heartbeat written at {record.get('last_seen')}, ahead of this clock by "
            f"{seen - now:.0f}s: its age is unknown (check the clocks, NTP)",
        }
    return {**record, "seen_seconds_ago": ago}


def bot_checks(
    name: str, view: dict[str, Any], window: float, cache_minutes: float
) -> list[dict[str, Any]]:
    """Seen lately, balance answering, store saving: one check each, for one bot."""
    if "problem" in view:
        return [{"check": f"{name}: heartbeat", "ok": False, "why": f"{name}: {view['problem']}"}]
    ago = view["seen_seconds_ago"]
    where = f"pid {view.get('pid')} on {view.get('host')}"
    seen_ok = ago <= window
    seen = {
        "check": f"{name}: seen",
        "ok": seen_ok,
        "why": f"{name}: last seen {ago:.0f}s ago ({where})"
        if seen_ok
        else f"{name}: not seen for {ago / 60:.1f} min (last at {view.get('last_seen')}, {where}; "
        f"alert after {window / 60:.1f} min): stopped or stuck? If retired: "
        f"`broker-guard forget {name}`",
    }
    return [
        seen,
        _balance_check(name, view.get("balance"), cache_minutes),
        _store_check(name, view),
    ]


def _balance_check(name: str, balance: Any, cache_minutes: float) -> dict[str, Any]:
    check = f"{name}: balance"
    if not isinstance(balance, dict):
        return {"check": check, "ok": True, "why": f"{name}: no balance figures"}
    errors = balance.get("consecutive_errors") or 0
    problems = []
    if isinstance(errors, int) and errors >= CONSECUTIVE_ERRORS_ALERT:
        problems.append(
            f"{name}: balance failing, {errors} consecutive errors (last: "
            f"{balance.get('last_error')})"
        )
    age = balance.get("fallback_age_seconds")
    if balance.get("fallback_in_use") and (
        not isinstance(age, (int, float)) or age / 60 > cache_minutes
    ):
        shown = f"{age / 60:.1f} min old" if isinstance(age, (int, float)) else "of unknown age"
        problems.append(f"{name}: trading on a fallback balance {shown} (over {cache_minutes} min)")
    if problems:
        return {"check": check, "ok": False, "why": "; ".join(problems)}
    return {
        "check": check,
        "ok": True,
        "why": f"{name}: balance answering (last success {balance.get('last_success')})",
    }


def _store_check(name: str, view: dict[str, Any]) -> dict[str, Any]:
    problem = view.get("store_problem")
    return {
        "check": f"{name}: store",
        "ok": not problem,
        "why": f"{name}: its state store failed: {problem}" if problem else f"{name}: store ok",
    }
