"""The retry decision as a value: the seed's backoff, budgets and retry-after hints."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker_guard.classify import FailureKind
from broker_guard.config import BalancePolicy
from broker_guard.core.retry import Action, RetryState, Why, backoff_delay, decide

SEED = BalancePolicy()  # 3 attempts, 2 s doubling, capped at 30 s


def test_the_seed_backoff_doubles_from_two_seconds_up_to_the_cap() -> None:
    policy = BalancePolicy(max_attempts=10)
    assert [backoff_delay(policy, n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_three_attempts_then_give_up() -> None:
    state = RetryState(started=0.0)
    first = decide(SEED, state, FailureKind.TRANSIENT, now=0.0)
    assert (first.action, first.delay, first.state.attempt) == (Action.RETRY, 2, 2)
    second = decide(SEED, first.state, FailureKind.TRANSIENT, now=2.0)
    assert (second.action, second.delay, second.state.attempt) == (Action.RETRY, 4, 3)
    third = decide(SEED, second.state, FailureKind.TRANSIENT, now=6.0)
    assert third.action is Action.GIVE_UP and third.why is None


def test_failures_that_are_not_passing_are_refused_at_once() -> None:
    for kind in (FailureKind.AUTH, FailureKind.BAD_ARGUMENT, FailureKind.BAD_SYMBOL):
        assert decide(SEED, RetryState(0.0), kind, 0.0).action is Action.REFUSE


def test_a_retry_after_hint_is_honoured_when_it_fits_the_budget() -> None:
    state = RetryState(0.0)
    assert decide(SEED, state, FailureKind.RATE_LIMIT, 0.0, hint=10.0).delay == 10.0
    beyond = decide(SEED, state, FailureKind.RATE_LIMIT, 0.0, hint=31.0)
    assert (beyond.action, beyond.why) == (Action.GIVE_UP, Why.HINT_BEYOND_BUDGET)
    short = decide(SEED, state, FailureKind.RATE_LIMIT, 0.0, hint=1.0)
    assert short.delay == 2  # a hint shorter than the backoff does not shorten it


def test_the_total_budget_stops_retries() -> None:
    policy = BalancePolicy(max_attempts=5, max_total_seconds=5.0)
    decision = decide(policy, RetryState(started=0.0, attempt=2), FailureKind.TRANSIENT, now=2.0)
    assert (decision.action, decision.why) == (Action.GIVE_UP, Why.BUDGET_SPENT)  # 4 s > 3 s left


def test_jitter_is_handed_in() -> None:
    decision = decide(SEED, RetryState(0.0), FailureKind.TRANSIENT, 0.0, jitter=lambda d: d / 4)
    assert decision.delay == 0.5


policies = st.builds(
    BalancePolicy,
    max_attempts=st.integers(1, 8),
    base_delay=st.floats(0.01, 10),
    max_delay=st.floats(0.01, 60),
    max_total_seconds=st.none() | st.floats(0.1, 120),
)
failures = st.lists(
    st.tuples(st.sampled_from(list(FailureKind)), st.none() | st.floats(0, 100)),
    min_size=1,
    max_size=12,
)


@given(policies, failures)
def test_retries_always_stop_within_the_attempts_and_the_budget(
    policy: BalancePolicy, seen: list[tuple[FailureKind, float | None]]
) -> None:
    """Never more attempts than ``max_attempts``; never a wait past the budget; never a wait
    longer than the cap unless the broker asked for it."""
    state, now, calls = RetryState(started=0.0), 0.0, 1
    for kind, hint in seen:
        decision = decide(
            policy, state, kind, now, hint=hint if kind is FailureKind.RATE_LIMIT else None
        )
        if not kind.retryable:
            assert decision.action is Action.REFUSE
        if decision.action is not Action.RETRY:
            break
        assert decision.delay <= max(policy.max_delay, hint or 0.0)
        if policy.max_total_seconds is not None:
            assert now + decision.delay <= policy.max_total_seconds + 1e-9
        now += decision.delay
        state = decision.state
        calls += 1
    assert calls <= policy.max_attempts
