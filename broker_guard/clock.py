"""Injected time: a clock returning epoch seconds and a sleeper, so tests never wait."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

Clock = Callable[[], float]
Sleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]

system_clock: Clock = time.time
system_sleep: Sleep = time.sleep


def asyncio_sleep(seconds: float) -> Awaitable[None]:
    import asyncio  # here: a sync bot and the CLI never load asyncio (~15 ms of start-up)

    return asyncio.sleep(seconds)


def utc_iso(epoch: float) -> str:
    """UTC ISO-8601 with offset, the only time format broker_guard writes."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


FUTURE_TOLERANCE_SECONDS = 60.0  # clocks of processes sharing state may differ this much


def age_seconds(saved_at: float, now: float) -> float | None:
    """How old a record saved at ``saved_at`` is; None when it is from the future (beyond a small
    tolerance): its age is unknown, and it is never treated as fresher than now."""
    age = now - saved_at
    if age < -FUTURE_TOLERANCE_SECONDS:
        return None
    return max(0.0, age)


def parse_utc_iso(text: str) -> float:
    """Inverse of ``utc_iso``; a naive time is taken as UTC."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1.5d``; ``ValueError`` naming the form otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text.lower())
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ValueError(f"bad duration {text!r}: use a number and a unit, like 90s, 30m, 2h, 1d")
    return seconds


def parse_aware_time(text: str) -> float:
    """Epoch seconds of an ISO-8601 time that names its offset (``2026-12-01T09:00+01:00``,
    ``...Z``); a time without one is refused rather than guessed."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {text!r}: use ISO 8601, like 2026-12-01T09:00+00:00") from None
    if parsed.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset: add one, like {text}+00:00 for UTC")
    return parsed.timestamp()


class FakeClock:
    """A manual clock and sleeper for tests, demos and benchmarks: sleeping advances time.

    ``monotonic()`` is its interval clock: ``advance`` and ``sleep`` move both, ``step`` moves the
    wall clock only (an NTP correction, a VM resumed).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = start
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.elapsed += seconds

    def step(self, seconds: float) -> None:
        """Move the wall clock only, forward or back."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
