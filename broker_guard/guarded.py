"""GuardedBroker: the drop-in guard, with the housekeeping a bot runs on its broker.

``BrokerProxy`` (``broker_guard.guard.proxy``) makes the wrapped broker's own
methods guarded; this class adds the guard's own API on top: ``health()``,
``halt()``, ``resume()``, ``dust()``, ``normalize()``, ``find_dust()``,
``valued_positions()`` and the maintenance thread. It sits above the
liquidation layer, which works on the guard's context and never imports the
proxy.
"""

from __future__ import annotations

from typing import Any

from broker_guard.guard.proxy import BrokerProxy
from broker_guard.liquidation.dust import dust_pass, scan
from broker_guard.liquidation.health import guard_health
from broker_guard.liquidation.maintenance import Maintenance
from broker_guard.liquidation.normalize import normalize_pass
from broker_guard.liquidation.valuation import read_positions, value_positions

OWN_API = (
    "health",
    "halt",
    "resume",
    "dust",
    "find_dust",
    "normalize",
    "valued_positions",
    "start_maintenance",
    "stop_maintenance",
)


class GuardedBroker(BrokerProxy):
    """Wrap ``broker``; strategy code keeps calling the same methods.

    ``config``: a ``GuardConfig`` (default: ``GuardConfig.load()``, file and
    environment). ``store``: where shared state lives (default: what
    ``config.guard.store_url`` names, JSON files in ``config.guard.data_dir``
    unless it is a Redis URL). ``profile``: ``"auto"``, ``"generic"``,
    ``"ccxt"``, a ``Profile`` or a ``{method: role}`` mapping. ``clock``,
    ``sleep`` and ``async_sleep`` are injectable for tests; ``on_event``
    receives ``GuardEvent``s.
    """

    _guard_own_api = OWN_API
    _self_maintenance: Maintenance | None = None

    def health(self) -> dict[str, Any]:
        """The seed's monitoring figures and alerts; ``ok`` is False when any alert is raised."""
        return guard_health(self.guard_context)

    def halt(self, reason: str) -> dict[str, Any]:
        """Halt trading for every guard sharing this state: entries refused on every symbol
        (``TradingHaltedError``), exits, prices and balances still pass, until ``resume``.
        Returns the halt record (reason, by, at)."""
        return self.guard_context.freeze.halt(reason).as_dict()

    def resume(self, reason: str) -> bool:
        """Lift the halt; False when trading was not halted."""
        return self.guard_context.freeze.resume(reason)

    def valued_positions(self) -> Any:
        """The broker's positions, normalised (lots summed) and valued through the guard."""
        ctx = self.guard_context
        return ctx.run(lambda: value_positions(ctx, read_positions(ctx)))

    def find_dust(self, threshold_usd: float | None = None) -> Any:
        """Positions worth less than the dust threshold whose value is known."""
        ctx = self.guard_context
        threshold = ctx.config.dust.threshold_usd if threshold_usd is None else threshold_usd
        return ctx.run(lambda: scan(ctx, threshold)[1])

    def dust(self, dry_run: bool | None = None, threshold_usd: float | None = None) -> Any:
        """Close every dust position at the broker (``config.dust``: threshold, dry-run, per-run
        cap)."""
        ctx = self.guard_context
        return ctx.run(lambda: dust_pass(ctx, dry_run, threshold_usd))

    def normalize(
        self,
        dry_run: bool = True,
        minimum_position_usd: float | None = None,
        consolidation_threshold_usd: float | None = None,
    ) -> Any:
        """Close positions below the minimum, flag consolidation candidates; dry-run unless told
        otherwise.

        Returns the result dict; for an async broker, an awaitable of it (as do
        ``dust``, ``valued_positions`` and ``find_dust``).
        """
        ctx = self.guard_context
        return ctx.run(
            lambda: normalize_pass(ctx, dry_run, minimum_position_usd, consolidation_threshold_usd)
        )

    def start_maintenance(self, **kwargs: Any) -> Maintenance:
        """Start the background thread that runs scheduled dust cleanup and startup
        normalization."""
        ctx = self.guard_context
        if ctx.is_async:
            raise TypeError(
                "the maintenance thread is for sync brokers; with an async broker, await "
                "guard.dust() in your own loop"
            )
        if self._self_maintenance is None:
            self._self_maintenance = Maintenance(ctx, **kwargs)
        self._self_maintenance.start()
        return self._self_maintenance

    def stop_maintenance(self, timeout: float = 10.0) -> None:
        if self._self_maintenance is not None:
            self._self_maintenance.stop(timeout)


__all__ = ["GuardedBroker"]
