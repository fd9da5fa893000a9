"""Every role x every failure kind gets the specified answer (the table in docs/RELIABILITY.md).

Roles: balance, price, positions (through ``dust()``), order. Failure kinds:
each transient kind, rate limit, a hang past the client's timeout, auth, bad
symbol, an exception carrying an API key, and invalid values of every type.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker, InvalidResponseError, MemoryStore
from broker_guard.testing import FakeClock

KEY = "sk-live-FAULTMATRIXKEY0123456789"
GOOD_BALANCE = 1_000.0


class StatusError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


class RateLimited(Exception):
    status_code = 429
    retry_after = 1.0


class AuthenticationError(Exception):
    """Named as ccxt's: classified by class name."""


def hang(clock: FakeClock) -> Callable[[], Any]:
    def hung() -> Any:
        clock.advance(30.0)  # the client waited its whole timeout
        raise TimeoutError("read timed out after 30s")

    return hung


def raising(exc: BaseException) -> Callable[[], Any]:
    def fail() -> Any:
        raise exc

    return fail


def returning(value: Any) -> Callable[[], Any]:
    return lambda: value


TRANSIENT = {
    "connection error": lambda c: raising(ConnectionError("Connection reset by peer")),
    "timeout": lambda c: raising(TimeoutError("timed out")),
    "HTTP 502": lambda c: raising(StatusError(502, "Bad Gateway")),
    "HTTP 503": lambda c: raising(StatusError(503, "Service Unavailable")),
    "exchange maintenance": lambda c: raising(
        RuntimeError("exchange under maintenance, try again")
    ),
    "rate limit 429": lambda c: raising(RateLimited("Too many requests")),
    "hang past timeout": hang,
    "error carrying an API key": lambda c: raising(
        ConnectionError(f"GET /balance?api_key={KEY} failed: connection refused")
    ),
}
NOT_RETRIED = {
    "auth (401)": lambda c: raising(StatusError(401, "Unauthorized")),
    "auth (class name)": lambda c: raising(AuthenticationError("invalid signature")),
}
INVALID_BALANCES = {
    "None": None,
    "NaN": math.nan,
    "inf": math.inf,
    "negative": -5.0,
    "string": "n/a",
    "NaN string": "NaN",
    "sNaN": Decimal("sNaN"),
    "bool": True,
    "empty dict": {},
    "list": [1000.0],
    "dict with NaN": {"USD": math.nan},
}
INVALID_PRICES = {
    "None": None,
    "NaN": math.nan,
    "inf": math.inf,
    "zero": 0.0,
    "negative": -1.0,
    "string": "n/a",
    "inf string": "-inf",
    "sNaN": Decimal("sNaN"),
    "bool": True,
    "dict": {},
}


class ScriptedBroker:
    """A broker whose every role answers from a script: ``script[role]()``."""

    def __init__(self) -> None:
        self.script: dict[str, Callable[[], Any]] = {}
        self.calls: dict[str, int] = {}
        self.orders: list[tuple[str, str, float]] = []

    def _answer(self, role: str, default: Any) -> Any:
        self.calls[role] = self.calls.get(role, 0) + 1
        action = self.script.get(role)
        return action() if action else default

    def get_account_balance(self) -> Any:
        return self._answer("balance", GOOD_BALANCE)

    def get_current_price(self, symbol: str) -> Any:
        return self._answer("price", 0.5)

    def get_positions(self) -> Any:
        return self._answer("positions", [{"symbol": "DOGE-USD", "quantity": 1.0}])

    def place_market_order(self, symbol: str, side: str, quantity: float) -> Any:
        self.orders.append((symbol, side, quantity))
        return self._answer("order", {"status": "filled"})


@pytest.fixture
def setup(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> tuple[ScriptedBroker, Any, FakeClock]:
    caplog.set_level(logging.DEBUG)
    broker = ScriptedBroker()
    config = GuardConfig.load(
        env={},
        balance={"jitter": False, "max_attempts": 3, "base_delay": 2.0, "max_total_seconds": 120.0},
    )
    guard = GuardedBroker(broker, config, store=MemoryStore(), clock=clock, sleep=clock.sleep)
    return broker, guard, clock


def no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert KEY not in caplog.text


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_balance_transient_faults_are_retried_then_answered_with_the_last_known_balance(
    setup: Any, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker, guard, clock = setup
    assert guard.get_account_balance() == GOOD_BALANCE
    broker.script["balance"] = TRANSIENT[fault](clock)
    assert guard.get_account_balance() == GOOD_BALANCE  # the last known balance
    assert broker.calls["balance"] == 1 + 3  # retried up to max_attempts
    no_secret_logged(caplog)


@pytest.mark.parametrize("fault", list(NOT_RETRIED))
def test_balance_auth_faults_are_raised_at_once_without_fallback(setup: Any, fault: str) -> None:
    broker, guard, clock = setup
    guard.get_account_balance()
    broker.script["balance"] = NOT_RETRIED[fault](clock)
    with pytest.raises(Exception, match=r"Unauthorized|invalid signature"):
        guard.get_account_balance()
    assert broker.calls["balance"] == 2 and clock.sleeps == []


@pytest.mark.parametrize("value", list(INVALID_BALANCES))
def test_balance_invalid_values_are_never_returned_nor_remembered(setup: Any, value: str) -> None:
    broker, guard, _clock = setup
    guard.get_account_balance()
    broker.script["balance"] = returning(INVALID_BALANCES[value])
    # retried as a glitch, then the last good one
    assert guard.get_account_balance() == GOOD_BALANCE
    broker.script.pop("balance")
    known = guard.balance_fetcher.get_last_known_balance(guard.account)
    assert known is not None and known["balance"] == GOOD_BALANCE


def test_balance_with_no_last_known_value_raises_a_clear_error(setup: Any) -> None:
    from broker_guard import BalanceUnavailableError

    broker, guard, clock = setup
    broker.script["balance"] = TRANSIENT["connection error"](clock)
    with pytest.raises(BalanceUnavailableError):
        guard.get_account_balance()


@pytest.mark.parametrize("fault", [*TRANSIENT, *NOT_RETRIED])
def test_price_outages_and_auth_are_raised_and_never_count_toward_freezing(
    setup: Any, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker, guard, clock = setup
    broker.script["price"] = {**TRANSIENT, **NOT_RETRIED}[fault](clock)
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017 - the broker's own error, unchanged
            guard.get_current_price("BTC-USD")
    assert broker.calls["price"] == 5  # never retried: a price is stale by the time a retry lands
    assert guard.freeze_manager.get_failure_count(
        "BTC-USD"
    ) == 0 and not guard.freeze_manager.is_frozen("BTC-USD")
    no_secret_logged(caplog)


def test_price_bad_symbol_counts_and_freezes_at_the_threshold(setup: Any) -> None:
    broker, guard, _clock = setup
    broker.script["price"] = raising(ValueError("Symbol not found: OLD-USD"))
    for expected in (1, 2):
        with pytest.raises(ValueError):
            guard.get_current_price("OLD-USD")
        assert guard.freeze_manager.get_failure_count("OLD-USD") == expected
    with pytest.raises(ValueError):
        guard.get_current_price("OLD-USD")
    assert guard.freeze_manager.is_frozen("OLD-USD")


@pytest.mark.parametrize("value", list(INVALID_PRICES))
def test_price_invalid_values_are_refused_and_counted(setup: Any, value: str) -> None:
    broker, guard, _clock = setup
    broker.script["price"] = returning(INVALID_PRICES[value])
    with pytest.raises(InvalidResponseError):
        guard.get_current_price("BTC-USD")
    assert guard.freeze_manager.get_failure_count("BTC-USD") == 1


@pytest.mark.parametrize("fault", [*TRANSIENT, *NOT_RETRIED])
def test_positions_failures_stop_the_run_before_any_order(setup: Any, fault: str) -> None:
    broker, guard, clock = setup
    broker.script["positions"] = {**TRANSIENT, **NOT_RETRIED}[fault](clock)
    with pytest.raises(Exception):  # noqa: B017 - the broker's error: no positions, no decision
        guard.dust(dry_run=False)
    assert broker.orders == []


@pytest.mark.parametrize(
    "entries",
    [
        None,
        [{"symbol": "DOGE-USD"}],
        [{"symbol": "DOGE-USD", "quantity": "lots"}],
        [{"symbol": "DOGE-USD", "quantity": math.nan}],
        [{"symbol": "DOGE-USD", "quantity": -1.0}],
        [{"quantity": 1.0}],
        ["DOGE-USD"],
        [
            {"symbol": "DOGE-USD", "quantity": 1.0, "usd_value": 500.0}
        ],  # the broker says $500: not dust, whatever the price says
    ],
    ids=[
        "None",
        "no quantity",
        "string quantity",
        "NaN quantity",
        "short",
        "no symbol",
        "not a dict",
        "value disagrees",
    ],
)
def test_positions_invalid_entries_are_reported_and_never_traded(setup: Any, entries: Any) -> None:
    broker, guard, _clock = setup
    broker.script["positions"] = returning(entries)
    result = guard.dust(dry_run=False)
    assert broker.orders == [] and result["closed"] == 0


@pytest.mark.parametrize("fault", [*TRANSIENT, *NOT_RETRIED])
def test_order_failures_are_never_retried_and_reported_as_failed(
    setup: Any, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker, guard, clock = setup
    broker.script["order"] = {**TRANSIENT, **NOT_RETRIED}[fault](clock)
    result = guard.dust(dry_run=False)
    assert len(broker.orders) == 1  # one attempt: a retried order can fill twice
    assert result["failed"] == 1 and result["closed"] == 0
    no_secret_logged(caplog)
    audit = guard.guard_context.store.read_lines("audit")
    assert KEY not in str(audit)


@pytest.mark.parametrize(
    "answer", [None, False, {"status": "rejected"}, {"success": False, "error": "min size"}]
)
def test_order_rejections_are_reported_as_failed(setup: Any, answer: Any) -> None:
    broker, guard, _clock = setup
    broker.script["order"] = returning(answer)
    result = guard.dust(dry_run=False)
    # None: the broker said nothing either way
    assert result["failed"] == (0 if answer is None else 1)
