"""Dust: closing every position worth less than the dust threshold (seed component: Broker Dust
Cleanup).

Closes, at the broker, every position worth less than the dust threshold
(default $1): legacy positions, adopted ones, remnants of failed or partial
orders. Uses ``force_liquidate=True`` where the broker accepts it, because
dust is usually below the minimum trade size. Dry-run previews without an
order. Every position found is reported exactly once, with what happened
to it and why.
"""

from __future__ import annotations

import time
from typing import Any

from broker_guard.guard.context import GuardContext
from broker_guard.liquidation.engine import Outcome, Run
from broker_guard.liquidation.positions import Position
from broker_guard.liquidation.valuation import read_positions, value_positions
from broker_guard.redact import logger as redact_logger

log = redact_logger("broker_guard.dust")
BAR = "=" * 70


class DustResult(dict[str, Any]):
    """The seed's figures (``result['closed']``, ``result['total_value_cleaned']``...) and every
    position's outcome (``result['positions']``), as a plain dict: ``json.dumps(result)`` works.

    The run's own objects stay reachable as attributes: ``outcomes`` (each
    ``Outcome`` with its ``Position`` and the broker's order), ``dry_run``,
    ``threshold_usd``, ``total_positions``, ``duration_seconds``.
    """

    def __init__(
        self,
        total_positions: int,
        threshold_usd: float,
        dry_run: bool,
        duration_seconds: float,
        outcomes: tuple[Outcome, ...],
    ) -> None:
        self.total_positions = total_positions
        self.threshold_usd = threshold_usd
        self.dry_run = dry_run
        self.duration_seconds = duration_seconds
        self.outcomes = tuple(outcomes)
        super().__init__(self._figures())

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def as_dict(self) -> dict[str, Any]:
        return dict(self)

    def _figures(self) -> dict[str, Any]:
        dust = [o for o in self.outcomes if o.action == "close_dust"]
        return {
            "total_positions": self.total_positions,
            "total_found": len(dust),
            "closed": self._count("closed"),
            "failed": self._count("failed") + self._count("unknown"),  # not known closed
            "unknown": self._count("unknown"),
            "dry_run_would_close": self._count("dry_run"),
            "skipped": sum(1 for o in dust if o.status == "skipped"),
            "total_value_cleaned": sum(
                o.usd_value or 0.0 for o in self.outcomes if o.status == "closed"
            ),
            "total_dust_value": sum(o.position.usd_value or 0.0 for o in dust),
            "duration_seconds": self.duration_seconds,
            "dry_run": self.dry_run,
            "threshold_usd": self.threshold_usd,
            "unknown_value": [o.as_dict() for o in self.outcomes if o.action == "skip"],
            "positions": [o.as_dict() for o in self.outcomes],
        }


def _fmt_qty(position: Position) -> str:
    return (
        f"{position.quantity:.8f} {position.asset}"
        if position.quantity is not None
        else f"? {position.asset}"
    )


def scan(
    ctx: GuardContext, threshold: float
) -> tuple[list[Position], list[Position], list[Position]]:
    """(all positions valued, dust, unknown-value) for one guarded broker."""
    log.info("🔍 Fetching all positions from broker...")
    positions = value_positions(ctx, read_positions(ctx))
    log.info("   Found %d total positions", len(positions))
    dust, unknown = [], []
    for position in positions:
        if position.worth_less_than(threshold):
            log.info(
                "   🗑️  DUST: %s - $%.4f (%s)",
                position.symbol,
                position.usd_value,
                _fmt_qty(position),
            )
            dust.append(position)
        elif not position.closable:
            log.info(
                "   ⏭️  SKIPPED: %s - %s", position.symbol or "?", position.problem or "not closable"
            )
            unknown.append(position)
    return positions, dust, unknown


def dust_pass(
    ctx: GuardContext, dry_run: bool | None = None, threshold_usd: float | None = None
) -> DustResult:
    """One dust run with the guard's ``dust`` settings, each overridable: what ``guard.dust()``
    runs."""
    policy = ctx.config.dust
    return run_dust_cleanup(
        ctx,
        policy.threshold_usd if threshold_usd is None else threshold_usd,
        policy.dry_run if dry_run is None else dry_run,
        policy.max_usd_per_run,
    )


def run_dust_cleanup(
    ctx: GuardContext, threshold: float, dry_run: bool, cap_usd: float | None
) -> DustResult:
    """Scan, close every dust position (or not, in a dry run), report each position once.

    ``threshold`` and ``dry_run`` are checked by the config file's rules first: a negative, NaN
    or infinite threshold (which would close everything) raises ``ConfigError``, no order sent.
    """
    ctx.config.replace(dust={"threshold_usd": threshold, "dry_run": dry_run})
    started = time.monotonic()
    dry = " (DRY RUN)" if dry_run else ""
    log.info("\n%s\n🧹 STARTING BROKER-LEVEL DUST CLEANUP%s\n%s", BAR, dry, BAR)
    positions, dust, unknown = scan(ctx, threshold)
    run = Run(ctx, "dust", dry_run, cap_usd)
    outcomes = _close_dust(run, dust, threshold)
    for position in unknown:
        why = position.problem or "not closable"
        outcomes.append(run.record(Outcome(position, "skip", "skipped", why)))
    outcomes += [
        Outcome(p, "keep", "kept", "at or above the dust threshold", p.usd_value)
        for p in positions
        if p.closable and not p.worth_less_than(threshold)
    ]
    elapsed = time.monotonic() - started
    result = DustResult(len(positions), threshold, dry_run, elapsed, tuple(outcomes))
    _log_summary(result, len(unknown))
    return result


def _close_dust(run: Run, dust: list[Position], threshold: float) -> list[Outcome]:
    if dust:
        log.info(
            "🚨 Found %d dust positions to clean up:\n   Total dust value: $%.4f",
            len(dust),
            sum(p.usd_value or 0 for p in dust),
        )
    outcomes = []
    for position in dust:
        log.info(
            "\n🔨 %s dust position: %s\n   Quantity: %s\n   USD Value: $%.4f",
            "Would close" if run.dry_run else "Closing",
            position.symbol,
            _fmt_qty(position),
            position.usd_value,
        )
        outcomes.append(run.close(position, threshold, "close_dust"))
    return outcomes


def _log_summary(result: DustResult, unknown: int) -> None:
    log.info(
        "\n%s\n🧹 DUST CLEANUP COMPLETE%s\n%s\n   Total Found: %d\n   Successfully Closed: %d\n"
        "   Failed: %d\n   Skipped (value unknown or changed): %d\n"
        "   Total Value Cleaned: $%.4f\n   Duration: %.2fs\n%s",
        BAR,
        " (DRY RUN: nothing was sold)" if result.dry_run else "",
        BAR,
        result["total_found"],
        result["closed"],
        result["failed"],
        result["skipped"] + unknown,
        result["total_value_cleaned"],
        result.duration_seconds,
        BAR,
    )
