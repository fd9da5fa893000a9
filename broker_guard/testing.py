"""Test helpers: a manual clock and sleeper, and the paper broker with fault injection.

For a bot's own tests and demos: with ``FakeClock`` nothing really waits, and
``PaperBroker`` fails on request (network errors, delisted symbols, rate limits).
"""

from __future__ import annotations

from broker_guard.clock import FakeClock
from broker_guard.paper import PaperAuthError, PaperBroker, PaperRateLimitError

__all__ = ["FakeClock", "PaperAuthError", "PaperBroker", "PaperRateLimitError"]
