"""Seed component: User Account Normalization.

Scans every position of one account or many, closes positions below the
minimum size (default $7.50) with a ``close_small`` action, and flags
positions between the minimum and the consolidation threshold ($10) as
consolidation candidates: for review by default, closed only when
``normalization.close_consolidation_candidates`` is set. Dry-run is the
default, as in the seed: run it dry, read the report, then run it for real.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from broker_guard.config import GuardConfig
from broker_guard.liquidation import Outcome, Run
from broker_guard.positions import Position, read_positions, value_positions
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact
from broker_guard.store import Store

log = redact_logger("broker_guard.normalize")
BAR = "=" * 70


def _plan(positions: list[Position], minimum: float, consolidation: float) -> tuple[list[Position], list[Position]]:
    small = [p for p in positions if p.worth_less_than(minimum)]
    candidates = [p for p in positions if p.worth_less_than(consolidation) and not p.worth_less_than(minimum)]
    return small, candidates


def normalize_account(guard: Any, *, minimum: float, consolidation: float, close_candidates: bool, dry_run: bool) -> dict[str, Any]:
    """One account's pass: scan, plan, execute (or not); a dict with the seed's keys."""
    started = time.monotonic()
    log.info("\n%s\n🔍 SCANNING POSITIONS FOR NORMALIZATION (%s)\n%s", BAR, guard.account, BAR)
    positions = value_positions(guard, read_positions(guard))
    log.info("   Found %d total positions", len(positions))
    small, candidates = _plan(positions, minimum, consolidation)
    for p in small:
        log.info("   ⚠️  SMALL POSITION: %s - $%.2f (below $%.2f)", p.symbol, p.usd_value, minimum)
    for p in candidates:
        log.info("   💡 CONSOLIDATION CANDIDATE: %s - $%.2f", p.symbol, p.usd_value)
    unknown = [p for p in positions if not p.closable]
    for p in unknown:
        log.info("   ⏭️  SKIPPED: %s - %s", p.symbol or "?", p.problem)
    actions = [(p, "close_small", minimum, f"Position below minimum ${minimum:.2f}") for p in small]
    actions += [(p, "consolidate", consolidation, f"Position below consolidation threshold ${consolidation:.2f}") for p in candidates]
    log.info(
        "\n%s\n📊 SCAN RESULTS\n%s\n   Total Positions: %d\n   Below Minimum ($%.2f): %d\n   Consolidation Candidates: %d\n"
        "   Total Actions Required: %d\n%s",
        BAR,
        BAR,
        len(positions),
        minimum,
        len(small),
        len(candidates),
        len(actions),
        BAR,
    )
    run = Run(guard, "normalize", dry_run)
    outcomes: list[Outcome] = []
    for index, (position, action, threshold, reason) in enumerate(actions, 1):
        log.info(
            "\nExecuting action %d/%d\n   Type: %s\n   Symbol: %s\n   Current Size: $%.2f\n   Reason: %s",
            index,
            len(actions),
            action,
            position.symbol,
            position.usd_value,
            reason,
        )
        if action == "consolidate" and not close_candidates:
            outcome = Outcome(position, "flag_for_review", "flagged", "consolidation candidate flagged for review", position.usd_value)
            log.info("   🏷️  Flagged %s for review (closing candidates is off)", position.symbol)
            run.audit(outcome)
        else:
            if not dry_run:
                log.info("🔨 Closing small position: %s ($%.2f)", position.symbol, position.usd_value)
            outcome = run.close(position, threshold, action)
        outcomes.append(outcome)
    for position in unknown:
        outcomes.append(run._record(Outcome(position, "skip", "skipped", position.problem or "not closable")))
    acted = {id(p) for p, *_ in actions} | {id(p) for p in unknown}
    outcomes += [Outcome(p, "keep", "kept", "at or above the minimum", p.usd_value) for p in positions if id(p) not in acted]
    executed = sum(1 for o in outcomes if o.status in ("closed", "flagged") and not dry_run)
    return {
        "account": guard.account,
        "total_positions": len(positions),
        "below_minimum": len(small),
        "consolidation_candidates": len(candidates),
        "actions_required": len(actions),
        "actions_executed": executed,
        "actions_failed": sum(1 for o in outcomes if o.status == "failed"),
        "actions_skipped": sum(1 for o in outcomes if o.status == "skipped" and o.action != "skip"),
        "actions_flagged": sum(1 for o in outcomes if o.status == "flagged"),
        "positions_closed": sum(1 for o in outcomes if o.status == "closed"),
        "unknown_value": len(unknown),
        "total_value_cleaned": sum(o.usd_value or 0.0 for o in outcomes if o.status == "closed"),
        "dry_run": dry_run,
        "duration_seconds": time.monotonic() - started,
        "actions": [o.as_dict() for o in outcomes],
    }


_SUMMED = (
    "total_positions",
    "below_minimum",
    "consolidation_candidates",
    "actions_required",
    "actions_executed",
    "actions_failed",
    "actions_skipped",
    "actions_flagged",
    "positions_closed",
    "unknown_value",
    "total_value_cleaned",
)


def run_normalization_pass(
    broker: object | Mapping[str, object],
    minimum_position_usd: float | None = None,
    dry_run: bool = True,
    *,
    consolidation_threshold_usd: float | None = None,
    close_consolidation_candidates: bool | None = None,
    config: GuardConfig | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """Normalise one broker or a mapping of account name to broker (seed API); dry-run by default.

    The result has the seed's keys in total (``actions_required``,
    ``actions_executed``, ``total_value_cleaned``...) and per account under ``accounts``.
    """
    from broker_guard.proxy import GuardedBroker

    base = config or GuardConfig.load()
    norm = base.normalization
    minimum = norm.minimum_position_usd if minimum_position_usd is None else minimum_position_usd
    consolidation = norm.consolidation_threshold_usd if consolidation_threshold_usd is None else consolidation_threshold_usd
    close = norm.close_consolidation_candidates if close_consolidation_candidates is None else close_consolidation_candidates
    checked = base.replace(normalization={"minimum_position_usd": minimum, "consolidation_threshold_usd": max(consolidation, minimum)})
    brokers: Mapping[str, object] = broker if isinstance(broker, Mapping) else {"": broker}
    started = time.monotonic()
    log.info("\n%s\n🔧 STARTING USER ACCOUNT NORMALIZATION%s\n%s", BAR, " (DRY RUN)" if dry_run else "", BAR)
    accounts: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for name, one in brokers.items():
        account_config = checked.replace(guard={"account": name}) if name else checked
        guard = one if isinstance(one, GuardedBroker) else GuardedBroker(one, account_config, store=store)
        label = name or guard.account
        try:
            accounts[label] = normalize_account(
                guard, minimum=minimum, consolidation=max(consolidation, minimum), close_candidates=close, dry_run=dry_run
            )
        except Exception as exc:  # one account's failure must not stop the others
            log.exception("normalization of account %s failed; other accounts go on", label)
            errors[label] = redact(f"{type(exc).__name__}: {exc}", guard._self_secrets)[:300]
    total: dict[str, Any] = {key: sum(a[key] for a in accounts.values()) for key in _SUMMED}
    total.update(
        dry_run=dry_run,
        minimum_position_usd=minimum,
        consolidation_threshold_usd=consolidation,
        duration_seconds=time.monotonic() - started,
        accounts=accounts,
        account_errors=errors,
        actions=[a for acct in accounts.values() for a in acct["actions"]],
    )
    log.info(
        "\n%s\n🔧 NORMALIZATION COMPLETE%s\n%s\n   Total Positions: %d\n   Actions Required: %d\n"
        "   Successfully Executed: %d\n   Failed: %d\n   Duration: %.2fs\n%s",
        BAR,
        " (DRY RUN: nothing was sold)" if dry_run else "",
        BAR,
        total["total_positions"],
        total["actions_required"],
        total["actions_executed"],
        total["actions_failed"],
        total["duration_seconds"],
        BAR,
    )
    return total
