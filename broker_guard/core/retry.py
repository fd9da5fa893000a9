"""The retry decision as a value: after a failed attempt, retry after a delay, give up, or refuse.

Like urllib3's ``Retry.increment()``, ``decide`` returns what to do and the
next state instead of changing anything; the balance fetcher logs, sleeps and
calls around it, the same way for a sync and an async broker. Delays come from
``backoff``'s exponential wait generator (2 s, 4 s, ... capped); jitter, which
is random, is handed in.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import backoff

from broker_guard.classify import FailureKind
from broker_guard.config import BalancePolicy


class Action(enum.Enum):
    RETRY = "retry"  # wait ``delay`` seconds, then call again
    GIVE_UP = "give_up"  # no attempt left (or no time): answer from the fallback
    REFUSE = "refuse"  # not worth retrying and never answered from the fallback: raise it


class Why(enum.Enum):
    """Why retries stop before the attempts run out."""

    HINT_BEYOND_BUDGET = "the broker asks to retry after longer than the retry budget"
    BUDGET_SPENT = "the retry budget is spent"


@dataclass(frozen=True)
class RetryState:
    """Where one call stands: ``attempt`` is the attempt that just failed (1 = the first)."""

    started: float
    attempt: int = 1


@dataclass(frozen=True)
class Decision:
    action: Action
    state: RetryState  # the state of the next attempt when retrying, else unchanged
    delay: float = 0.0
    why: Why | None = None  # set when giving up before the attempts ran out


def backoff_delay(policy: BalancePolicy, attempt: int) -> float:
    """The wait after failed attempt ``attempt``: base_delay doubling per attempt, capped at
    max_delay."""
    waits = backoff.expo(base=2, factor=policy.base_delay, max_value=policy.max_delay)
    next(waits)  # the generator's priming step yields nothing
    delay: float = next(itertools.islice(waits, attempt - 1, None))
    return delay  # as backoff yields it (an int max_delay stays an int in events and logs)


def decide(
    policy: BalancePolicy,
    state: RetryState,
    kind: FailureKind,
    now: float,
    *,
    hint: float | None = None,
    jitter: Callable[[float], float] | None = None,
) -> Decision:
    """What to do after ``state.attempt`` failed with a failure of ``kind`` at ``now``.

    ``hint``: the broker's retry-after (rate limits only), honoured when it fits
    the budget (``max_total_seconds``, else ``max_delay``).
    """
    if not kind.retryable:
        return Decision(Action.REFUSE, state)
    if state.attempt >= policy.max_attempts:
        return Decision(Action.GIVE_UP, state)
    delay = backoff_delay(policy, state.attempt)
    if jitter is not None:
        delay = jitter(delay)
    budget = None
    if policy.max_total_seconds is not None:
        budget = policy.max_total_seconds - (now - state.started)
    if hint is not None and hint > delay:
        if hint > (budget if budget is not None else policy.max_delay):
            return Decision(Action.GIVE_UP, state, why=Why.HINT_BEYOND_BUDGET)
        delay = hint
    if budget is not None and delay >= budget:  # no time left for the attempt after the wait
        return Decision(Action.GIVE_UP, state, why=Why.BUDGET_SPENT)
    return Decision(Action.RETRY, RetryState(state.started, state.attempt + 1), delay=delay)


def time_left(policy: BalancePolicy, started: float, now: float) -> float | None:
    """Seconds of the call's budget left (counted from the first attempt); None: no budget."""
    if policy.max_total_seconds is None:
        return None
    return policy.max_total_seconds - (now - started)
