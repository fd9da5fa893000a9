"""GuardContext: what one guard is made of, as one small typed object.

The liquidation engine, health and the maintenance thread work on a guard
through this object instead of reading the proxy's ``_self_*`` attributes, so
they depend on the guard's parts, never on the proxy module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from broker_guard.clock import Clock
from broker_guard.config import GuardConfig
from broker_guard.events import EventHook
from broker_guard.guard.async_bridge import run_in_thread
from broker_guard.guard.balance_fetcher import EnhancedBalanceFetcher
from broker_guard.guard.counters import GuardCounters
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guard.heartbeat import Heartbeat
from broker_guard.guard.markets import MarketNames
from broker_guard.guard.profiles import Profile
from broker_guard.state.base import Store

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class GuardContext:
    """One guard's parts. ``broker`` is the raw broker; ``guarded`` the proxy, whose role methods
    pass the guard's gates (a close order placed through it is checked like any other order)."""

    broker: Any
    guarded: Any
    config: GuardConfig
    profile: Profile
    account: str
    store: Store
    freeze: SymbolFreezeManager
    balance: EnhancedBalanceFetcher
    clock: Clock
    secrets: tuple[str, ...]
    on_event: EventHook | None  # the guard's own counters, then the user's hook
    is_async: bool
    markets: MarketNames | None = None  # how the broker reads a symbol; None: as written
    counters: GuardCounters | None = None
    heartbeat: Heartbeat | None = None

    def run(self, work: Callable[[], T]) -> Any:
        """Run a liquidation job: directly, or for an async broker as an awaitable
        (``async_bridge``)."""
        return run_in_thread(work) if self.is_async else work()
