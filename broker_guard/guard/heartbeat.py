"""Heartbeats: each guard's small record in the shared state, so the operator's ``broker-guard
health`` and ``serve`` tell from outside the bot that it runs and how its broker answers.

A guard writes its record when it is used and a beat is due (at most once per
``guard.heartbeat_seconds``, checked after the freeze state's refresh and after
each balance call, so the success path pays a clock comparison), and at once
after a balance error streak starts, reaches the alert level, or ends. A bot
that stops calling its broker stops beating: that is what "not seen" means.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from broker_guard.clock import Clock, age_seconds, utc_iso
from broker_guard.errors import StoreError
from broker_guard.redact import logger as redact_logger

if TYPE_CHECKING:  # types only: health and the CLI read heartbeats without loading the guard
    from broker_guard.guard.balance_fetcher import EnhancedBalanceFetcher
    from broker_guard.guard.counters import GuardCounters
    from broker_guard.guard.freeze_manager import SymbolFreezeManager
    from broker_guard.state.base import Store

log = redact_logger("broker_guard.heartbeat")

STATE = "heartbeats"
SECTION = "bots"
CONSECUTIVE_ERRORS_ALERT = 3  # balance failures in a row that raise a health alert


class Heartbeat:
    """One guard's heartbeat under ``name`` (``guard.name``, default its account)."""

    def __init__(
        self,
        *,
        store: Store,
        name: str,
        account: str,
        interval: float,
        clock: Clock,
        freeze: SymbolFreezeManager,
        balance: EnhancedBalanceFetcher,
        counters: GuardCounters,
    ) -> None:
        self.store, self.name, self.account, self.interval = store, name, account, interval
        self.clock, self.monotonic = clock, freeze.monotonic
        self.freeze, self.balance, self.counters = freeze, balance, counters
        self.started_at = clock()
        self.next_beat = -math.inf if interval > 0 else math.inf  # 0: never written
        self.problem: str | None = None  # why the last beat was not saved
        self._lock = threading.Lock()

    def tick(self) -> None:
        """Write the record if a beat is due: a clock comparison otherwise."""
        if self.monotonic() >= self.next_beat:
            self.beat()

    def streak(self, account: str, count: int, error: str) -> None:
        """The balance fetcher's error-streak hook: a streak that starts, reaches the alert level
        or ends (count 0) is written at the next tick, not an interval later."""
        if self.interval > 0 and count in (0, 1, CONSECUTIVE_ERRORS_ALERT):
            self.next_beat = -math.inf

    def record(self) -> dict[str, Any]:
        """What this guard reports: who it is, when it was seen, its balance and state as it sees
        them, and its counters."""
        now = self.clock()
        seen = self.freeze.summary()
        health = self.balance.account_health().get(self.account)
        success = health.last_success_at if health else None
        fallback_at = health.fallback_fetched_at if health else None
        return {
            "name": self.name,
            "account": self.account,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": utc_iso(self.started_at),
            "seen_at": now,
            "last_seen": utc_iso(now),
            "interval_seconds": self.interval,
            "balance": {
                "last_success": utc_iso(success) if success is not None else None,
                "last_success_at": success,
                "consecutive_errors": health.consecutive_errors if health else 0,
                "last_error": health.last_error if health else None,
                "fallback_in_use": fallback_at is not None,
                "fallback_age_seconds": None
                if fallback_at is None
                else age_seconds(fallback_at, now),
            },
            **seen,
            "store_problem": self._store_problem(seen["store_problem"]),
            "counters": self.counters.as_dict(),
        }

    def beat(self) -> None:
        """Write the record now; a store that refuses it is logged once per problem, never
        raised into the trading call that happened to be due."""
        if not self._lock.acquire(blocking=False):
            return  # another thread is writing it
        try:
            self.next_beat = self.monotonic() + self.interval
            record = self.record()

            def put(data: dict[str, Any]) -> None:
                data.setdefault(SECTION, {})[self.name] = record

            # urgent: a lock held by another process is waited 50 ms, not lock_timeout, on the
            # trading call that was due; replay=False: an outage never queues beats to replay
            self.store.update(STATE, put, keys=[(SECTION, self.name)], urgent=True, replay=False)
        except Exception as exc:  # housekeeping: never raised into the call that was due
            if str(exc) != self.problem:
                log.warning(
                    "heartbeat of %s not saved (%s); retried next beat",
                    self.name,
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )
            self.problem = str(exc)
        else:
            self.problem = None
        finally:
            self._lock.release()

    def _store_problem(self, problem: str | None) -> str | None:
        """What the bot's freeze state (``problem``) or its store says is wrong (state kept in
        memory only, damaged files set aside), or None."""
        health = self.store.health()
        degraded = "; ".join(f"{k}: {v}" for k, v in health.degraded.items())
        found = [p for p in (problem, degraded or None) if p]
        if health.quarantined:
            found.append("damaged records set aside: " + "; ".join(health.quarantined))
        return "; ".join(found) or None


def read_heartbeats(store: Store) -> dict[str, dict[str, Any]]:
    """Every guard's last heartbeat by name; a record of the wrong shape is kept as found, for
    health to report."""
    bots = store.read(STATE).get(SECTION, {})
    return dict(bots) if isinstance(bots, dict) else {}


def forget(store: Store, name: str) -> bool:
    """Remove a retired bot's heartbeat; False when there was none."""

    def drop(data: dict[str, Any]) -> bool:
        return data.get(SECTION, {}).pop(name, None) is not None

    _records, found = store.update(STATE, drop, keys=[(SECTION, name)], replay=False)
    return found
