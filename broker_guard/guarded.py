"""GuardedBroker: the drop-in guard, with the housekeeping a bot runs on its broker.

``BrokerProxy`` (``broker_guard.guard.proxy``) makes the wrapped broker's own
methods guarded; this class adds the guard's own API on top: ``health()``,
``halt()``, ``resume()``, ``dust()``, ``normalize()``, ``find_dust()``,
``valued_positions()`` and the maintenance thread. It sits above the
liquidation layer, which works on the guard's context and never imports the
proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from broker_guard.clock import Clock, Sleep
from broker_guard.config import GuardConfig
from broker_guard.events import EventHook
from broker_guard.guard.profiles import Profile
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
    receives ``GuardEvent``s. ``strict=False``: a broker on which the profile
    finds no balance, price or order method is wrapped with a warning instead of
    ``NothingToGuardError``. ``wrap()`` is the same guard, typed as the broker.
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


B = TypeVar("B")


def wrap(
    broker: B,
    config: GuardConfig | None = None,
    *,
    store: Any = None,
    profile: str | Profile | Mapping[str, Any] = "auto",
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    async_sleep: Callable[[float], Any] | None = None,
    on_event: EventHook | None = None,
    transient_exceptions: tuple[type[BaseException], ...] = (),
    secrets: Iterable[str] = (),
    strict: bool = True,
) -> B:
    """``GuardedBroker(broker, ...)`` typed as the broker itself, so a type checker checks every
    call through it against the broker's own signatures and accepts it wherever the broker's
    type is expected (it is one: ``isinstance(guarded, type(broker))`` holds). The guard's own
    API (``health``, ``halt``, ``dust``...) is ``guard_of(guarded)``."""
    guarded = GuardedBroker(
        broker,
        config,
        store=store,
        profile=profile,
        clock=clock,
        sleep=sleep,
        async_sleep=async_sleep,
        on_event=on_event,
        transient_exceptions=transient_exceptions,
        secrets=secrets,
        strict=strict,
    )
    return cast(B, guarded)


def guard_of(guarded: object) -> GuardedBroker:
    """The guard behind a broker ``wrap`` returned, typed, for the guard's own API."""
    if isinstance(guarded, GuardedBroker):
        return guarded
    raise TypeError(
        f"{type(guarded).__name__} is not a guarded broker: wrap it first "
        "(guarded = broker_guard.wrap(broker))"
    )


__all__ = ["GuardedBroker", "guard_of", "wrap"]
