"""Normalization: closing or flagging positions below a minimum size (seed component: User Account
Normalization).

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
from dataclasses import dataclass, replace
from typing import Any

from broker_guard.config import GuardConfig
from broker_guard.guard.context import GuardContext
from broker_guard.liquidation.engine import Outcome, Run
from broker_guard.liquidation.positions import Position
from broker_guard.liquidation.valuation import read_positions, value_positions
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact

log = redact_logger("broker_guard.normalize")
BAR = "=" * 70


@dataclass(frozen=True)
class NormalizationPlan:
    """The thresholds of one pass: the guard's ``normalization`` settings, each overridable."""

    minimum: float
    consolidation: float
    close_candidates: bool

    @classmethod
    def resolve(
        cls,
        config: GuardConfig,
        minimum: float | None = None,
        consolidation: float | None = None,
        close_candidates: bool | None = None,
    ) -> NormalizationPlan:
        """The plan from ``config.normalization`` and the caller's overrides, checked by the same
        rules as the config file: a negative, NaN or infinite threshold raises ``ConfigError``
        before any position is read (an infinite minimum would close everything)."""
        policy = config.normalization
        plan = cls(
            policy.minimum_position_usd if minimum is None else minimum,
            policy.consolidation_threshold_usd if consolidation is None else consolidation,
            policy.close_consolidation_candidates if close_candidates is None else close_candidates,
        )
        plan.applied_to(config)
        # the consolidation threshold on its own too (below the minimum it means no candidates)
        config.replace(
            normalization={
                "minimum_position_usd": 0.0,
                "consolidation_threshold_usd": plan.consolidation,
            }
        )
        return plan

    def applied_to(self, config: GuardConfig) -> GuardConfig:
        """``config`` with this plan's thresholds (checked by the config file's rules)."""
        return config.replace(
            normalization={
                "minimum_position_usd": self.minimum,
                "consolidation_threshold_usd": max(self.consolidation, self.minimum),
                "close_consolidation_candidates": self.close_candidates,
            }
        )


Action = tuple[Position, str, float, str]  # position, action, threshold, reason


def normalize_account(ctx: GuardContext, plan: NormalizationPlan, dry_run: bool) -> dict[str, Any]:
    """One account's pass: scan, plan, execute (or not); a dict with the seed's keys."""
    started = time.monotonic()
    log.info("\n%s\n🔍 SCANNING POSITIONS FOR NORMALIZATION (%s)\n%s", BAR, ctx.account, BAR)
    positions = value_positions(ctx, read_positions(ctx))
    log.info("   Found %d total positions", len(positions))
    small, candidates, unknown = _scan(positions, plan)
    actions = _actions(small, candidates, plan)
    _log_scan_results(len(positions), plan.minimum, len(small), len(candidates), len(actions))
    run = Run(ctx, "normalize", dry_run)
    outcomes = [_execute(run, plan, action, n, len(actions)) for n, action in enumerate(actions, 1)]
    for position in unknown:
        why = position.problem or "not closable"
        outcomes.append(run.record(Outcome(position, "skip", "skipped", why)))
    acted = {id(p) for p, *_ in actions} | {id(p) for p in unknown}
    outcomes += [
        Outcome(p, "keep", "kept", "at or above the minimum", p.usd_value)
        for p in positions
        if id(p) not in acted
    ]
    return {
        "account": ctx.account,
        "total_positions": len(positions),
        "below_minimum": len(small),
        "consolidation_candidates": len(candidates),
        "actions_required": len(actions),
        **_figures(outcomes, dry_run),
        "unknown_value": len(unknown),
        "total_value_cleaned": sum(o.usd_value or 0.0 for o in outcomes if o.status == "closed"),
        "dry_run": dry_run,
        "duration_seconds": time.monotonic() - started,
        "actions": [o.as_dict() for o in outcomes],
    }


def _scan(
    positions: list[Position], plan: NormalizationPlan
) -> tuple[list[Position], list[Position], list[Position]]:
    """(below the minimum, consolidation candidates, value unknown), each logged."""
    small = [p for p in positions if p.worth_less_than(plan.minimum)]
    candidates = [
        p
        for p in positions
        if p.worth_less_than(plan.consolidation) and not p.worth_less_than(plan.minimum)
    ]
    unknown = [p for p in positions if not p.closable]
    for p in small:
        log.info(
            "   ⚠️  SMALL POSITION: %s - $%.2f (below $%.2f)", p.symbol, p.usd_value, plan.minimum
        )
    for p in candidates:
        log.info("   💡 CONSOLIDATION CANDIDATE: %s - $%.2f", p.symbol, p.usd_value)
    for p in unknown:
        log.info("   ⏭️  SKIPPED: %s - %s", p.symbol or "?", p.problem)
    return small, candidates, unknown


def _actions(
    small: list[Position], candidates: list[Position], plan: NormalizationPlan
) -> list[Action]:
    below = f"Position below minimum ${plan.minimum:.2f}"
    consolidate = f"Position below consolidation threshold ${plan.consolidation:.2f}"
    actions: list[Action] = [(p, "close_small", plan.minimum, below) for p in small]
    actions += [(p, "consolidate", plan.consolidation, consolidate) for p in candidates]
    return actions


def _log_scan_results(
    total: int, minimum: float, small: int, candidates: int, actions: int
) -> None:
    log.info(
        "\n%s\n📊 SCAN RESULTS\n%s\n   Total Positions: %d\n   Below Minimum ($%.2f): %d\n   "
        "Consolidation Candidates: %d\n   Total Actions Required: %d\n%s",
        BAR,
        BAR,
        total,
        minimum,
        small,
        candidates,
        actions,
        BAR,
    )


def _execute(run: Run, plan: NormalizationPlan, action: Action, index: int, total: int) -> Outcome:
    """One action: a candidate is flagged for review unless closing candidates is on."""
    position, kind, threshold, reason = action
    log.info(
        "\nExecuting action %d/%d\n   Type: %s\n   Symbol: %s\n   Current Size: $%.2f\n   "
        "Reason: %s",
        index,
        total,
        kind,
        position.symbol,
        position.usd_value,
        reason,
    )
    if kind == "consolidate" and not plan.close_candidates:
        why = "consolidation candidate flagged for review"
        outcome = Outcome(position, "flag_for_review", "flagged", why, position.usd_value)
        log.info("   🏷️  Flagged %s for review (closing candidates is off)", position.symbol)
        run.audit(outcome)
        return outcome
    if not run.dry_run:
        log.info("🔨 Closing small position: %s ($%.2f)", position.symbol, position.usd_value)
    return run.close(position, threshold, kind)


def _figures(outcomes: list[Outcome], dry_run: bool) -> dict[str, Any]:
    def count(status: str) -> int:
        return sum(1 for o in outcomes if o.status == status)

    return {
        "actions_executed": 0 if dry_run else count("closed") + count("flagged"),
        "actions_failed": count("failed") + count("unknown"),  # not known to be closed
        "actions_unknown": count("unknown"),
        "actions_skipped": sum(1 for o in outcomes if o.status == "skipped" and o.action != "skip"),
        "actions_flagged": count("flagged"),
        "positions_closed": count("closed"),
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


def normalize_accounts(
    accounts: Mapping[str, GuardContext], plan: NormalizationPlan, dry_run: bool
) -> dict[str, Any]:
    """Normalise every account (label -> guard); one account's failure never stops the others.

    The result has the seed's keys in total (``actions_required``,
    ``actions_executed``, ``total_value_cleaned``...) and per account under ``accounts``.
    """
    minimum, consolidation = plan.minimum, plan.consolidation
    account_plan = replace(plan, consolidation=max(consolidation, minimum))
    started = time.monotonic()
    log.info(
        "\n%s\n🔧 STARTING USER ACCOUNT NORMALIZATION%s\n%s",
        BAR,
        " (DRY RUN)" if dry_run else "",
        BAR,
    )
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for label, ctx in accounts.items():
        try:
            results[label] = normalize_account(ctx, account_plan, dry_run)
        except Exception as exc:  # one account's failure must not stop the others
            log.exception("normalization of account %s failed; other accounts go on", label)
            errors[label] = redact(f"{type(exc).__name__}: {exc}", ctx.secrets)[:300]
    total: dict[str, Any] = {key: sum(a[key] for a in results.values()) for key in _SUMMED}
    total.update(
        dry_run=dry_run,
        minimum_position_usd=minimum,
        consolidation_threshold_usd=consolidation,
        duration_seconds=time.monotonic() - started,
        accounts=results,
        account_errors=errors,
        actions=[a for acct in results.values() for a in acct["actions"]],
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


def normalize_pass(
    ctx: GuardContext,
    dry_run: bool = True,
    minimum: float | None = None,
    consolidation: float | None = None,
) -> dict[str, Any]:
    """One account's pass with the guard's ``normalization`` settings: what ``guard.normalize()``
    runs."""
    plan = NormalizationPlan.resolve(ctx.config, minimum, consolidation)
    return normalize_accounts({ctx.account: ctx}, plan, dry_run)
