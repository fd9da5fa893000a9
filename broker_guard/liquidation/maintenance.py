"""The optional maintenance thread: scheduled dust cleanup and normalization on startup.

It never runs two passes at once, and never lets a pass's exception out: the
trading loop it runs beside must not be stopped by housekeeping.
"""

from __future__ import annotations

import threading
from typing import Any

from broker_guard.clock import parse_duration
from broker_guard.guard.context import GuardContext
from broker_guard.liquidation.dust import dust_pass
from broker_guard.liquidation.normalize import normalize_pass
from broker_guard.redact import logger as redact_logger

log = redact_logger("broker_guard.maintenance")


def schedule_seconds(schedule: str) -> float | None:
    """``daily`` -> 86400, ``hourly`` -> 3600, ``every 30m`` -> 1800, ``off`` -> None."""
    text = schedule.strip().lower()
    if text == "off":
        return None
    if text == "daily":
        return 86400.0
    if text == "hourly":
        return 3600.0
    every, _sep, interval = text.partition(" ")
    try:
        if every != "every":
            raise ValueError(schedule)
        return parse_duration(interval)
    except ValueError:
        raise ValueError(
            f"unknown schedule {schedule!r}: use off, daily, hourly or 'every 30m'"
        ) from None


class Maintenance:
    """Runs what is due at each ``tick``; ``start`` runs ticks on a daemon thread every ``poll``
    seconds."""

    def __init__(self, ctx: GuardContext, *, poll: float = 30.0) -> None:
        self.ctx = ctx
        self.poll = poll
        config = ctx.config
        self.interval = schedule_seconds(config.dust.schedule) if config.dust.enabled else None
        self.next_dust: float | None = ctx.clock() + self.interval if self.interval else None
        self.normalize_pending = (
            config.normalization.enabled and config.normalization.run_on_startup
        )
        # (kind, result or exception) of each pass, newest last
        self.runs: list[tuple[str, Any]] = []
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[str]:
        """Run every pass that is due now; returns their names. Skips if a pass is already
        running."""
        if not self._busy.acquire(blocking=False):
            log.info("maintenance pass still running; this tick is skipped")
            return []
        ran: list[str] = []
        try:
            if self.normalize_pending:
                self.normalize_pending = False
                ran.append("normalize")
                self._run("normalize", lambda: normalize_pass(self.ctx, dry_run=True))
            now = self.ctx.clock()
            if self.next_dust is not None and self.interval is not None and now >= self.next_dust:
                self.next_dust = now + self.interval
                ran.append("dust")
                self._run("dust", lambda: dust_pass(self.ctx))
        finally:
            self._busy.release()
        return ran

    def _run(self, kind: str, action: Any) -> None:
        try:
            result = action()
        except Exception as exc:
            log.exception(
                "scheduled %s pass failed; trading goes on and the next pass runs on schedule", kind
            )
            result = exc
        self.runs.append((kind, result))
        del self.runs[:-20]

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="broker-guard-maintenance", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.poll)
