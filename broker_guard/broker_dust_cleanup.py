"""Seed component: Broker Dust Cleanup, where the seed's imports look for it.

Closes, at the broker, every position worth less than the dust threshold
(default $1): legacy positions, adopted ones, remnants of failed or partial
orders. ``get_broker_dust_cleanup()`` gives the process's shared engine; the
run itself lives in ``broker_guard.liquidation.dust``.
"""

from __future__ import annotations

from typing import Any

from broker_guard._singleton import SingletonFactory
from broker_guard.config import GuardConfig
from broker_guard.guard.context import GuardContext
from broker_guard.guarded import GuardedBroker
from broker_guard.liquidation.dust import DustResult, run_dust_cleanup, scan
from broker_guard.liquidation.positions import Position


class BrokerDustCleanup:
    """Find and close dust positions; one instance may serve many brokers."""

    def __init__(
        self,
        dust_threshold_usd: float = 1.00,
        dry_run: bool = False,
        *,
        config: GuardConfig | None = None,
        store: Any = None,
    ) -> None:
        base = config or GuardConfig.load()
        self.config = base.replace(dust={"threshold_usd": dust_threshold_usd, "dry_run": dry_run})
        self.dust_threshold_usd = self.config.dust.threshold_usd
        self.dry_run = self.config.dust.dry_run
        self._store = store

    def _context(self, broker: object) -> GuardContext:
        guard = (
            broker
            if isinstance(broker, GuardedBroker)
            else GuardedBroker(broker, self.config, store=self._store)
        )
        return guard.guard_context

    def scan(
        self, broker: object, threshold: float
    ) -> tuple[list[Position], list[Position], list[Position]]:
        """(all positions valued, dust, unknown-value) for one broker."""
        return scan(self._context(broker), threshold)

    def find_dust_positions(
        self, broker: object, threshold_usd: float | None = None
    ) -> list[Position]:
        """Positions worth less than the threshold whose value is known (seed API)."""
        threshold = self.dust_threshold_usd if threshold_usd is None else threshold_usd
        return scan(self._context(broker), threshold)[1]

    def cleanup_all_dust(
        self, broker: object, *, dry_run: bool | None = None, threshold_usd: float | None = None
    ) -> DustResult:
        """Close every dust position at the broker (seed API); returns the seed's figures."""
        dry = self.dry_run if dry_run is None else dry_run
        threshold = self.dust_threshold_usd if threshold_usd is None else threshold_usd
        return run_dust_cleanup(
            self._context(broker), threshold, dry, self.config.dust.max_usd_per_run
        )


def _build(
    dust_threshold_usd: float | None = None, dry_run: bool | None = None
) -> BrokerDustCleanup:
    config = GuardConfig.load()
    return BrokerDustCleanup(
        config.dust.threshold_usd if dust_threshold_usd is None else dust_threshold_usd,
        config.dust.dry_run if dry_run is None else dry_run,
        config=config,
    )


_factory: SingletonFactory[BrokerDustCleanup] = SingletonFactory("get_broker_dust_cleanup", _build)


def get_broker_dust_cleanup(
    dust_threshold_usd: float | None = None, dry_run: bool | None = None
) -> BrokerDustCleanup:
    """The process's shared cleanup engine (seed API). A later call with different arguments raises
    ConfigError."""
    return _factory.get(dust_threshold_usd=dust_threshold_usd, dry_run=dry_run)


def reset_broker_dust_cleanup() -> None:
    _factory.reset()


__all__ = [
    "BrokerDustCleanup",
    "DustResult",
    "get_broker_dust_cleanup",
    "reset_broker_dust_cleanup",
]
