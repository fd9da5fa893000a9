"""Events the guard reports to an ``on_event`` hook: retry, fallback, freeze, unfreeze, probe,
refusal."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker_guard.redact import logger as redact_logger

log = redact_logger("broker_guard.events")


@dataclass(frozen=True)
class GuardEvent:
    # retry | fallback | balance_unavailable | failure | freeze | unfreeze | probe | refused |
    # halt | resume | liquidation | scan
    kind: str
    at: float  # epoch seconds, UTC
    symbol: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


EventHook = Callable[[GuardEvent], None]


def emit(hook: EventHook | None, event: GuardEvent) -> None:
    """Call the user's hook; its own failure is logged, never allowed to break a broker call."""
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        log.exception(
            "on_event hook failed for a %s event; the guarded call is unaffected", event.kind
        )


def chained(first: EventHook, then: EventHook | None) -> EventHook:
    """One hook calling ``first``, then ``then``: each one's failure is logged on its own."""
    if then is None:
        return first

    def both(event: GuardEvent) -> None:
        emit(first, event)
        emit(then, event)

    return both


def actor() -> str:
    """Who is acting, for the records an operator reads later: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname() or 'localhost'}"
