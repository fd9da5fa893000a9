from __future__ import annotations

import asyncio
import logging
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_guard import (
    BalanceUnavailableError,
    ConfigError,
    GuardConfig,
    GuardedBroker,
    JsonFileStore,
    MemoryStore,
)
from broker_guard.config import BalancePolicy
from broker_guard.core.validate import is_valid_balance
from broker_guard.enhanced_balance_fetcher import (
    EnhancedBalanceFetcher,
    get_enhanced_balance_fetcher,
)
from broker_guard.paper import PaperAuthError, PaperRateLimitError
from broker_guard.testing import FakeClock, PaperBroker


class Flaky:
    """Fails with the queued exceptions (or returns queued values), then returns ``good``."""

    def __init__(self, *script: Any, good: Any = 1000.0, account_id: str = "acct-1") -> None:
        self.script = list(script)
        self.good = good
        self.calls = 0
        self.account_id = account_id

    def get_account_balance(self) -> Any:
        self.calls += 1
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item
        return self.good


def test_retries_with_exact_exponential_delays(make_guard: Any, clock: FakeClock) -> None:
    broker = Flaky(ConnectionError("Network error"), TimeoutError("timed out"))
    assert make_guard(broker).get_account_balance() == 1000.0
    assert broker.calls == 3 and clock.sleeps == [2.0, 4.0]


def test_delays_double_to_the_30s_cap(make_guard: Any, clock: FakeClock) -> None:
    broker = Flaky(*[ConnectionError("down")] * 6)
    make_guard(broker, balance={"max_attempts": 7}).get_account_balance()
    assert clock.sleeps == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_stays_within_the_delay(make_guard: Any, clock: FakeClock) -> None:
    make_guard(
        Flaky(*[ConnectionError("down")] * 2), balance={"jitter": True}
    ).get_account_balance()
    assert 0 <= clock.sleeps[0] <= 2.0 and 0 <= clock.sleeps[1] <= 4.0


def test_success_logs_nothing_above_debug(
    make_guard: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard(Flaky())
    with caplog.at_level(logging.DEBUG, logger="broker_guard"):
        guard.get_account_balance()
        guard.get_account_balance()
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]


@pytest.mark.parametrize(
    "error",
    [PaperAuthError("invalid API key"), PermissionError("forbidden"), ValueError("bad argument")],
)
def test_non_transient_errors_propagate_at_once_and_skip_the_cache(
    make_guard: Any, clock: FakeClock, error: Exception
) -> None:
    broker = Flaky()
    guard = make_guard(broker)
    guard.get_account_balance()  # a cached balance exists
    broker.script = [error]
    with pytest.raises(type(error)):
        guard.get_account_balance()
    assert broker.calls == 2 and clock.sleeps == []


def test_fallback_serves_last_known_with_its_age(
    make_guard: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Flaky(good=500.0)
    guard = make_guard(broker)
    guard.get_account_balance()
    clock.advance(5 * 60)
    broker.script = [ConnectionError("Network error")] * 3
    with caplog.at_level(logging.WARNING, logger="broker_guard"):
        assert guard.get_account_balance() == 500.0
    text = caplog.text
    assert "USING FALLBACK BALANCE" in text and "Last Known Balance: $500.00" in text
    assert "Age: 5.1 minutes" in text and "Consecutive Errors: 3" in text
    assert "Balance fetch failed permanently after 3 attempts" in text
    info = guard.balance_fetcher.get_last_known_balance()
    assert (
        info["balance"] == 500.0
        and info["consecutive_errors"] == 3
        and math.isclose(info["age_minutes"], 5.1)
    )


def test_old_fallback_warns_and_too_old_is_refused(
    make_guard: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Flaky()
    guard = make_guard(broker, balance={"max_fallback_age_minutes": 60.0})
    guard.get_account_balance()
    clock.advance(45 * 60)
    broker.script = [ConnectionError("down")] * 3
    with caplog.at_level(logging.WARNING):
        assert guard.get_account_balance() == 1000.0
    assert "minutes old (over 30)" in caplog.text
    clock.advance(30 * 60)
    broker.script = [ConnectionError("down")] * 3
    with pytest.raises(BalanceUnavailableError, match=r"over the 60\.0 min limit") as info:
        guard.get_account_balance()
    assert isinstance(info.value.cause, ConnectionError)


def test_no_cached_balance_raises_balance_unavailable(make_guard: Any) -> None:
    with pytest.raises(BalanceUnavailableError, match="no last known balance"):
        make_guard(Flaky(*[ConnectionError("down")] * 3)).get_account_balance()


@pytest.mark.parametrize(
    "bad", [None, math.nan, -5.0, math.inf, "n/a", "nan", Decimal("sNaN"), True, [], {}]
)
def test_invalid_responses_are_failures_and_never_remembered(make_guard: Any, bad: Any) -> None:
    broker = Flaky(bad, bad, bad)
    guard = make_guard(broker)
    with pytest.raises(BalanceUnavailableError):
        guard.get_account_balance()
    assert guard.balance_fetcher.get_last_known_balance() is None


@given(
    st.one_of(
        st.none(),
        st.floats(),
        st.integers(),
        st.text(),
        st.booleans(),
        st.dictionaries(st.text(), st.floats()),
    )
)
def test_only_valid_balances_are_ever_remembered(value: Any) -> None:
    """Property: whatever the broker answers, the cache only ever holds finite non-negative
    balances."""
    clock = FakeClock()
    fetcher = EnhancedBalanceFetcher(BalancePolicy(max_attempts=1), clock=clock, sleep=clock.sleep)
    try:
        fetcher.call(lambda: value, (), {}, ("a", "b"))
    except BalanceUnavailableError:
        pass
    known = fetcher.get_last_known_balance()
    if known is not None:
        assert is_valid_balance(known["balance"])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value) and value >= 0


def test_rate_limit_retry_after_is_honoured_when_it_fits(make_guard: Any, clock: FakeClock) -> None:
    make_guard(Flaky(PaperRateLimitError(retry_after=7.0))).get_account_balance()
    assert clock.sleeps == [7.0]


def test_rate_limit_hint_beyond_the_budget_gives_up_to_the_fallback(
    make_guard: Any, clock: FakeClock
) -> None:
    broker = Flaky()
    guard = make_guard(broker)
    guard.get_account_balance()
    broker.script = [PaperRateLimitError(retry_after=600.0)]
    assert guard.get_account_balance() == 1000.0
    assert clock.sleeps == [] and broker.calls == 2


def test_total_time_budget_caps_the_call(make_guard: Any, clock: FakeClock) -> None:
    broker = Flaky(*[ConnectionError("down")] * 5)
    with pytest.raises(BalanceUnavailableError):
        make_guard(
            broker, balance={"max_attempts": 5, "max_total_seconds": 5.0}
        ).get_account_balance()
    assert clock.sleeps == [2.0] and broker.calls == 2  # 2 + 4 would pass the 5 s budget


def test_a_restart_during_an_outage_still_has_the_balance_with_its_true_age(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = GuardConfig.load(env={}, data_dir=str(tmp_path))
    from broker_guard import GuardedBroker

    first = GuardedBroker(Flaky(good=750.0), config, clock=clock, sleep=clock.sleep)
    first.get_account_balance()
    # the process dies; twenty minutes later a new one starts during an outage
    clock.advance(20 * 60)
    restarted = GuardedBroker(
        Flaky(*[ConnectionError("down")] * 3), config, clock=clock, sleep=clock.sleep
    )
    assert restarted.get_account_balance() == 750.0
    assert math.isclose(
        restarted.balance_fetcher.get_last_known_balance()["age_minutes"], 20.0, abs_tol=0.2
    )


def test_never_serves_another_accounts_balance(tmp_path: Path, clock: FakeClock) -> None:
    from broker_guard import GuardedBroker

    store = JsonFileStore(tmp_path)
    config = GuardConfig.load(env={})
    rich = GuardedBroker(
        Flaky(good=1_000_000.0, account_id="rich"),
        config,
        store=store,
        clock=clock,
        sleep=clock.sleep,
    )
    rich.get_account_balance()
    poor = GuardedBroker(
        Flaky(*[ConnectionError("down")] * 3, account_id="poor"),
        config,
        store=store,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(BalanceUnavailableError):
        poor.get_account_balance()


def test_call_signatures_are_remembered_separately(make_guard: Any) -> None:
    class TwoCurrencies:
        def __init__(self) -> None:
            self.down = False

        def get_balance(self, currency: str = "USD") -> float:
            if self.down:
                raise ConnectionError("down")
            return {"USD": 100.0, "EUR": 90.0}[currency]

    broker = TwoCurrencies()
    guard = make_guard(broker)
    guard.get_balance("USD")
    guard.get_balance("EUR")
    broker.down = True
    assert guard.get_balance("USD") == 100.0 and guard.get_balance("EUR") == 90.0


def test_async_broker_same_decisions(make_guard: Any, clock: FakeClock) -> None:
    class AsyncBroker:
        def __init__(self) -> None:
            self.fails = 2

        async def get_account_balance(self) -> float:
            if self.fails:
                self.fails -= 1
                raise ConnectionError("Network error")
            return 321.0

    guard = make_guard(AsyncBroker())
    assert asyncio.run(guard.get_account_balance()) == 321.0
    assert clock.sleeps == [2.0, 4.0]
    guard.__wrapped__.fails = 3
    assert asyncio.run(guard.get_account_balance()) == 321.0  # fallback


def test_thread_safety_of_concurrent_calls(make_guard: Any) -> None:
    import threading

    guard = make_guard(PaperBroker(cash=42.0))
    results: list[float] = []
    threads = [
        threading.Thread(
            target=lambda: results.extend(guard.get_account_balance() for _ in range(200))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42.0] * 800


def test_seed_snippet_runs_as_shown(capsys: pytest.CaptureFixture[str]) -> None:
    broker = PaperBroker(cash=1000.0)
    fetcher = get_enhanced_balance_fetcher(max_attempts=3, base_delay=2.0)
    balance = fetcher.get_balance_with_fallback(broker, verbose=True)
    print(f"Balance: ${balance:.2f}")
    info = fetcher.get_last_known_balance()
    if info:
        print(f"Balance age: {info['age_minutes']:.1f} minutes")
        print(f"Consecutive errors: {info['consecutive_errors']}")
    out = capsys.readouterr().out
    assert (
        "Balance: $1000.00" in out
        and "Balance age: 0.0 minutes" in out
        and "Consecutive errors: 0" in out
    )


def test_seed_getter_is_shared_and_refuses_different_arguments() -> None:
    first = get_enhanced_balance_fetcher(max_attempts=3, base_delay=2.0)
    assert get_enhanced_balance_fetcher() is first
    assert get_enhanced_balance_fetcher(max_attempts=3) is first
    with pytest.raises(ConfigError, match="max_attempts"):
        get_enhanced_balance_fetcher(max_attempts=5)


def test_ccxt_style_balance_dicts_are_validated() -> None:
    assert is_valid_balance(
        {"free": {"USD": 10.0}, "total": {"USD": 12.0, "BTC": 0.1}, "info": {"raw": "x"}}
    )
    assert not is_valid_balance({"total": {"USD": math.nan}})
    assert not is_valid_balance({"total": {"USD": -1.0}})
    assert not is_valid_balance({})


def test_memory_store_default(clock: FakeClock) -> None:
    fetcher = EnhancedBalanceFetcher(clock=clock, sleep=clock.sleep, store=MemoryStore())
    assert fetcher.get_balance_with_fallback(PaperBroker(cash=5.0)) == 5.0


# -- deadlines (issue 14, item 5) ------------------------------------------------------------


class Hung:
    """A broker call that never answers: on the injected clock it takes ``seconds`` (or the ccxt
    exchange's own request timeout) and then times out."""

    def __init__(self, clock: FakeClock, exchange: Any = None, seconds: float = 3600.0) -> None:
        self.clock, self.exchange, self.seconds = clock, exchange, seconds
        self.timeouts: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import ccxt

        waited = self.seconds
        if self.exchange is not None:
            self.timeouts.append(self.exchange.timeout)
            waited = self.exchange.timeout / 1000
        self.clock.advance(waited)
        raise ccxt.RequestTimeout(f"no answer in {waited}s")


def hung_binance(clock: FakeClock, **balance: Any) -> tuple[Any, Hung]:
    ccxt = pytest.importorskip("ccxt")
    exchange = ccxt.binance(
        {
            "apiKey": "HUNG-TEST-KEY-0001",
            "secret": "HUNG-TEST-SECRET-0001",
            "enableRateLimit": False,
        }
    )
    exchange.markets = {}  # nothing to load: the balance call goes straight to the socket
    hung = Hung(clock, exchange)
    exchange.fetch = hung  # ccxt's own HTTP layer: a socket that never answers
    config = GuardConfig.load(env={}, balance=balance)
    guard = GuardedBroker(exchange, config, store=MemoryStore(), clock=clock, sleep=clock.sleep)
    return guard, hung


def test_a_ccxt_balance_call_that_never_answers_ends_within_the_budget(clock: FakeClock) -> None:
    """Before: 22 s with max_total_seconds=5 (the budget started after the first 10 s attempt)."""
    guard, hung = hung_binance(clock, max_total_seconds=5.0)
    with pytest.raises(BalanceUnavailableError):
        guard.fetch_balance()
    assert clock.elapsed == pytest.approx(5.0)
    assert hung.timeouts == [5000]  # the request's own timeout fit to the budget
    assert guard.__wrapped__.timeout == 10000  # and given back


def test_the_budget_counts_from_the_first_attempt_and_leaves_room_for_retries(
    clock: FakeClock,
) -> None:
    guard, hung = hung_binance(clock, max_total_seconds=14.0, base_delay=1.0, max_attempts=5)
    hung.exchange.timeout = 4000  # shorter than the budget: kept while it fits
    guard = GuardedBroker(
        hung.exchange,
        GuardConfig.load(
            env={}, balance={"max_total_seconds": 14.0, "base_delay": 1.0, "max_attempts": 5}
        ),
        store=MemoryStore(),
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(BalanceUnavailableError):
        guard.fetch_balance()
    # 4 s, wait 1 s, 4 s, wait 2 s, then only 3 s left: the third request gets 3 s
    assert hung.timeouts == [4000, 4000, 3000]
    assert clock.sleeps == [1.0, 2.0]
    assert clock.elapsed == pytest.approx(14.0)


def test_without_a_budget_the_exchanges_timeout_is_left_alone(clock: FakeClock) -> None:
    guard, hung = hung_binance(clock, base_delay=1.0)
    with pytest.raises(BalanceUnavailableError):
        guard.fetch_balance()
    assert hung.timeouts == [10000, 10000, 10000]  # documented: set max_total_seconds


def test_an_async_balance_call_that_never_answers_is_cut_at_the_budget(
    make_guard: Any, clock: FakeClock
) -> None:
    class NeverAnswers:
        calls = 0

        async def get_account_balance(self) -> float:
            NeverAnswers.calls += 1
            if NeverAnswers.calls == 1:
                return 500.0
            await asyncio.Event().wait()  # a socket that never answers
            raise AssertionError("unreachable")

    guard = make_guard(NeverAnswers(), balance={"max_total_seconds": 5.0, "base_delay": 2.0})

    async def scenario() -> None:
        assert await guard.get_account_balance() == 500.0
        started = clock.elapsed
        assert await guard.get_account_balance() == 500.0  # the fallback, at the deadline
        assert clock.elapsed - started == pytest.approx(5.0)

    asyncio.run(scenario())


def test_an_async_call_that_winds_down_slowly_does_not_outlast_the_budget(
    make_guard: Any, clock: FakeClock
) -> None:
    """Review finding: the deadline waited for the cut call to wind down (4 s past a 1 s
    budget)."""

    class SlowToCancel:
        async def get_account_balance(self) -> float:
            try:
                await asyncio.Event().wait()
            finally:
                await clock.async_sleep(4.0)  # cleanup after the cancel takes 4 s
            raise AssertionError("unreachable")

    guard = make_guard(SlowToCancel(), balance={"max_total_seconds": 1.0, "max_attempts": 1})

    async def scenario() -> None:
        with pytest.raises(BalanceUnavailableError):
            await guard.get_account_balance()
        assert clock.elapsed == pytest.approx(1.0)

    asyncio.run(scenario())
