"""Health: the seed's monitoring figures and the alerts an operator or cron job acts on."""

from __future__ import annotations

from typing import Any

from broker_guard.guard.context import GuardContext

CONSECUTIVE_ERRORS_ALERT = 3


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
    alerts = []
    halt = stats["halted"]
    if halt:
        alerts.append(
            f"Trading halted since {halt['at']} by {halt['by']}: {halt['reason']} (entries "
            "refused, exits allowed; `broker-guard resume --reason ...`)"
        )
    if stats["frozen_count"] > frozen_limit:
        alerts.append(
            f"High number of frozen symbols: {stats['frozen_count']} (limit {frozen_limit})"
        )
    return alerts


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
