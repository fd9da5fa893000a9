"""The Enhanced Balance Fetcher (seed component; the seed's import path is
``broker_guard.enhanced_balance_fetcher``).

Balance calls are retried on transient failures with exponential backoff
(``backoff``'s wait generators: 2 s, 4 s, ... capped at 30 s) and, when the
broker stays down, answered from the last known valid balance of the same
account and call, with its true age. Authentication, permission and argument
errors surface at once and are never answered from the cache. The first
attempt runs outside the retry machinery, so the success path costs a call,
a validity check and a dictionary write.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import backoff
import cachetools

from broker_guard.classify import FailureKind, classify, retry_after_seconds
from broker_guard.clock import (
    AsyncSleep,
    Clock,
    Sleep,
    age_seconds,
    asyncio_sleep,
    parse_utc_iso,
    system_clock,
    system_sleep,
    utc_iso,
)
from broker_guard.config import BalancePolicy
from broker_guard.core.retry import Action, RetryState, Why, decide, time_left
from broker_guard.core.validate import is_valid_balance, real_number, stored_balance
from broker_guard.errors import BalanceUnavailableError, InvalidResponseError, StoreError
from broker_guard.events import EventHook, GuardEvent, emit
from broker_guard.guard.profiles import GENERIC, account_key
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state.base import Store
from broker_guard.state.memory import MemoryStore

log = redact_logger("broker_guard.balance")

STATE = "balances"


def describe_balance(value: Any) -> str:
    number = None if isinstance(value, Mapping) else real_number(value)
    if number is not None:
        return f"${number:.2f}"
    if isinstance(value, Mapping):
        total = value.get("total")
        if isinstance(total, Mapping):
            shown = ", ".join(f"{k} {v}" for k, v in list(total.items())[:4] if v)
            return f"{{{shown}}}" if shown else "{}"
    return type(value).__name__


@dataclass
class AccountHealth:
    consecutive_errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    # when the last call was answered from the fallback: when that balance was fetched
    fallback_fetched_at: float | None = None


class _Run:
    """One call's retry state around ``core.retry.decide``: shared by the sync and async drivers."""

    __slots__ = ("fetcher", "key", "last_error", "state", "verbose")

    def __init__(
        self, fetcher: EnhancedBalanceFetcher, key: tuple[str, str], verbose: bool, started: float
    ) -> None:
        self.fetcher = fetcher
        self.key = key
        self.state = RetryState(started=started)  # the budget counts from the first attempt
        self.verbose = verbose
        self.last_error: BaseException | None = None

    def failed(self, exc: BaseException) -> float | None:
        """Seconds to wait before the next attempt; None to stop. Re-raises what must not be
        retried."""
        fetcher = self.fetcher
        policy = fetcher.policy
        # an invalid answer is a glitch: try again
        kind = (
            FailureKind.TRANSIENT if isinstance(exc, InvalidResponseError) else fetcher.kind_of(exc)
        )
        message = fetcher.redact(exc)
        fetcher.note_error(self.key[0], message)
        self.last_error = exc
        level = logging.WARNING if self.verbose else logging.DEBUG
        attempt = self.state.attempt
        log.log(
            level,
            "⚠️  Balance fetch failed (attempt %d/%d): %s",
            attempt,
            policy.max_attempts,
            message,
        )
        hint = retry_after_seconds(exc) if kind is FailureKind.RATE_LIMIT else None
        jitter = backoff.full_jitter if policy.jitter else None
        decision = decide(policy, self.state, kind, fetcher.clock(), hint=hint, jitter=jitter)
        if decision.action is Action.REFUSE:
            log.error(
                "Balance fetch failed with an error of kind %s, not retried and not answered from "
                "cache: %s",
                kind.value,
                message,
            )
            raise exc
        if decision.why is Why.HINT_BEYOND_BUDGET:
            log.warning(
                "Broker asks to retry after %.1fs, beyond the retry budget; giving up retries", hint
            )
        elif decision.why is Why.BUDGET_SPENT:
            log.log(level, "Retry budget of %.1fs spent; not retrying", policy.max_total_seconds)
        if decision.action is Action.GIVE_UP:
            return None
        log.log(level, "🔄 Retrying in %gs...", decision.delay)
        detail = {"attempt": attempt, "delay": decision.delay, "error": message}
        emit(fetcher.on_event, GuardEvent("retry", fetcher.clock(), None, detail))
        self.state = decision.state
        return decision.delay

    def succeeded(self, value: Any) -> Any:
        self.fetcher.remember(self.key, value)
        if self.verbose:
            log.info(
                "✅ Balance fetch succeeded on attempt %d: %s",
                self.state.attempt,
                describe_balance(value),
            )
        return value

    def give_up(self) -> Any:
        log.error("❌ Balance fetch failed permanently after %d attempts", self.state.attempt)
        return self.fetcher.fallback(self.key, self.last_error)


class DeadlineExceeded(TimeoutError):
    """An attempt got no answer within what was left of the call's time budget (transient)."""


async def within(awaitable: Awaitable[Any], seconds: float, sleep: AsyncSleep) -> Any:
    """``awaitable``'s result, or ``DeadlineExceeded`` once ``sleep(seconds)`` is over first.

    Races the injected sleeper rather than ``asyncio.wait_for``, so a test's fake clock decides
    the deadline and no test waits for real."""
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(sleep(max(seconds, 0.0)))
    try:
        done, _pending = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    # cancelled, not awaited: a call that takes long to wind down must not outlast the budget
    task.add_done_callback(_consume)
    raise DeadlineExceeded(f"no answer within {max(seconds, 0.0):.1f}s, the rest of the budget")


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a cut call's outcome so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


class RequestTimeout:
    """Fits a ccxt exchange's own request timeout (milliseconds) to what is left of a balance
    call's budget, so a socket that never answers cannot outlast it; restored after each attempt
    to the timeout the exchange had when the guard was built."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.ceiling = exchange.timeout

    def fit(self, seconds: float) -> None:
        self.exchange.timeout = max(1, int(min(self.ceiling, max(seconds, 0.001) * 1000)))

    def restore(self) -> None:
        self.exchange.timeout = self.ceiling


class EnhancedBalanceFetcher:
    """Retry with backoff and last-known fallback for balance calls, per account and call
    signature."""

    def __init__(
        self,
        policy: BalancePolicy | None = None,
        *,
        store: Store | None = None,
        clock: Clock = system_clock,
        sleep: Sleep = system_sleep,
        async_sleep: Callable[[float], Any] = asyncio_sleep,
        on_event: EventHook | None = None,
        secrets: Iterable[str] = (),
        transient_exceptions: tuple[type[BaseException], ...] = (),
        account: str | None = None,
        on_error_streak: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.policy = policy or BalancePolicy()
        self.store: Store = store if store is not None else MemoryStore()
        self.clock = clock
        self._sleep = sleep
        self._async_sleep: AsyncSleep = async_sleep
        self.on_event = on_event
        self._secrets = tuple(secrets)
        register_secrets(self._secrets)  # masked in every log line, by the package's log filter
        self.transient_exceptions = transient_exceptions
        self.account = account
        # (account, failures in a row, last error) at each failure; (account, 0, "") on recovery
        self.on_error_streak = on_error_streak
        self._lock = threading.Lock()
        self._last: cachetools.LRUCache[tuple[str, str], tuple[Any, float]] = cachetools.LRUCache(
            maxsize=1024
        )
        self._persisted_at: dict[tuple[str, str], float] = {}
        self._health: dict[str, AccountHealth] = {}
        self._loaded = False

    # -- the guarded call ----------------------------------------------------------------------

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: tuple[str, str],
        verbose: bool = True,
        timeout: RequestTimeout | None = None,
    ) -> Any:
        """The sync driver: call, and on a failure ask ``_Run`` whether to sleep and call again.
        With a time budget, ``timeout`` fits each request's own timeout to what is left."""
        started = self.clock()
        run: _Run | None = None  # built on the first failure: the success path enters no retry code
        while True:
            left = time_left(self.policy, started, self.clock())
            try:
                if timeout is not None and left is not None:
                    timeout.fit(left)
                value = fn(*args, **kwargs)
            except Exception as exc:
                error: BaseException = exc
            else:
                if is_valid_balance(value):
                    if run is not None:
                        return run.succeeded(value)
                    self.remember(key, value)
                    return value
                error = self._invalid(value)
            finally:
                if timeout is not None and left is not None:
                    timeout.restore()
            run = run or _Run(self, key, verbose, started)
            delay = run.failed(error)
            if delay is None:
                return run.give_up()
            self._sleep(delay)

    async def call_async(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: tuple[str, str],
        verbose: bool = True,
    ) -> Any:
        """The async driver: the same as ``call``, awaiting the broker and the sleep; with a time
        budget each attempt is cut at what is left of it (``within``, on the injected sleeper)."""
        started = self.clock()
        run: _Run | None = None
        while True:
            left = time_left(self.policy, started, self.clock())
            try:
                if left is None:
                    value = await fn(*args, **kwargs)
                else:
                    value = await within(fn(*args, **kwargs), left, self._async_sleep)
            except Exception as exc:
                error: BaseException = exc
            else:
                if is_valid_balance(value):
                    if run is not None:
                        return run.succeeded(value)
                    self.remember(key, value)
                    return value
                error = self._invalid(value)
            run = run or _Run(self, key, verbose, started)
            delay = run.failed(error)
            if delay is None:
                return run.give_up()
            await self._async_sleep(delay)

    # -- seed API ------------------------------------------------------------------------------

    def get_balance_with_fallback(self, broker: object, verbose: bool = True) -> Any:
        """Fetch ``broker``'s balance with retry, falling back to the last known one (seed API)."""
        raw = getattr(broker, "__wrapped__", broker)
        name = GENERIC.first(raw, "balance") or (
            "fetch_balance" if callable(getattr(raw, "fetch_balance", None)) else None
        )
        if name is None:
            known = ", ".join(n for n, s in GENERIC.methods.items() if s.role == "balance")
            raise TypeError(
                f"{type(raw).__name__} has no balance method (looked for {known}, fetch_balance)"
            )
        key = (account_key(raw, self.account), name)
        return self.call(getattr(raw, name), (), {}, key, verbose)

    def get_last_known_balance(self, account: str | None = None) -> dict[str, Any] | None:
        """The newest remembered balance (of ``account`` if given), with age and error figures."""
        self._load()
        now = self.clock()
        with self._lock:
            entries = [(k, v) for k, v in self._last.items() if account is None or k[0] == account]
        if not entries:
            return None
        (acct, signature), (value, fetched_at) = max(entries, key=lambda item: item[1][1])
        health = self._health.get(acct, AccountHealth())
        age = age_seconds(fetched_at, now)
        return {
            "balance": value,
            "account": acct,
            "call": signature,
            "timestamp": utc_iso(fetched_at),
            "age_seconds": age,  # None: saved under a clock ahead of this one, age unknown
            "age_minutes": None if age is None else age / 60,
            "is_stale": age is None or age / 60 > self.policy.cache_timeout_minutes,
            "consecutive_errors": health.consecutive_errors,
            "last_error": health.last_error,
            "last_success": utc_iso(health.last_success_at) if health.last_success_at else None,
        }

    def account_health(self) -> dict[str, AccountHealth]:
        self._load()
        return dict(self._health)

    # -- state ---------------------------------------------------------------------------------

    def kind_of(self, exc: BaseException) -> FailureKind:
        return classify(exc, self.transient_exceptions)

    def redact(self, exc: BaseException | str) -> str:
        return redact(exc, self._secrets)[:300] or type(exc).__name__

    def _invalid(self, value: Any) -> InvalidResponseError:
        return InvalidResponseError(
            f"broker returned an invalid balance: {redact(repr(value), self._secrets)[:100]}"
        )

    def remember(self, key: tuple[str, str], value: Any) -> None:
        """Keep a valid balance; written to disk at most every ``persist_interval_seconds``."""
        now = self.clock()
        with self._lock:
            self._last[key] = (value, now)
            health = self._health.get(key[0])
            if health is None:
                health = self._health[key[0]] = AccountHealth()
            health.last_success_at = now
            health.fallback_fetched_at = None
            recovered = health.consecutive_errors
            health.consecutive_errors = 0
            due = (
                now - self._persisted_at.get(key, -math.inf) >= self.policy.persist_interval_seconds
            )
        if due or recovered:
            self._persist(key)
        if recovered and self.on_error_streak is not None:
            self.on_error_streak(key[0], 0, "")

    def note_error(self, account: str, message: str) -> None:
        now = self.clock()
        with self._lock:
            health = self._health.setdefault(account, AccountHealth())
            health.consecutive_errors += 1
            health.last_error = message
            health.last_error_at = now
            streak = health.consecutive_errors
        if self.on_error_streak is not None:
            self.on_error_streak(account, streak, message)

    def fallback(self, key: tuple[str, str], error: BaseException | None) -> Any:
        """The last known balance of ``key`` with a loud warning, or ``BalanceUnavailableError``
        when there is none or it is older than ``max_fallback_age_minutes``."""
        self._load()
        self._persist(key)  # flush the newest good value and the error count before serving it
        with self._lock:
            entry = self._last.get(key)
            health = self._health.get(key[0], AccountHealth())
        now = self.clock()
        reason = self.redact(error) if error is not None else "unknown error"
        account = key[0]
        if entry is None:
            detail: dict[str, Any] = {"account": account, "error": reason}
            emit(self.on_event, GuardEvent("balance_unavailable", now, None, detail))
            raise BalanceUnavailableError(
                f"balance of {account} unavailable after {self.policy.max_attempts} attempts "
                f"({reason}) and no last known balance exists; check connectivity and credentials",
                cause=error,
            )
        value, fetched_at = entry
        age = age_seconds(fetched_at, now)
        age_min = math.inf if age is None else age / 60
        limit = self.policy.max_fallback_age_minutes
        if limit is not None and age_min > limit:
            detail = {"account": account, "age_minutes": None if age is None else age_min}
            emit(self.on_event, GuardEvent("balance_unavailable", now, None, detail))
            how_old = (
                "of unknown age (saved under a clock ahead of this one)"
                if age is None
                else f"{age_min:.1f} min old"
            )
            raise BalanceUnavailableError(
                f"balance of {account} unavailable ({reason}); the last known one is "
                f"{how_old}, over the {limit} min limit "
                "(balance_fetcher.max_fallback_age_minutes)",
                cause=error,
            )
        if age is None:
            log.warning(
                "⚠️  The last known balance of %s was saved at %s, ahead of this clock: its age is "
                "unknown. Check the system clock (NTP)",
                account,
                utc_iso(fetched_at),
            )
        with self._lock:
            self._health.setdefault(account, health).fallback_fetched_at = fetched_at
        self._log_fallback(value, age_min, health.consecutive_errors)
        detail = {"account": account, "age_minutes": age_min, "error": reason}
        emit(self.on_event, GuardEvent("fallback", now, None, detail))
        return value

    def _log_fallback(self, value: Any, age_min: float, errors: int) -> None:
        bar = "=" * 70
        log.warning(
            "\n%s\n⚠️  USING FALLBACK BALANCE\n%s\n   Last Known Balance: %s\n   Age: %.1f minutes\n"
            "   Consecutive Errors: %d\n\n   Bot will continue trading with cached balance.\n"
            "   Balance will be updated once API is available.\n%s",
            bar,
            bar,
            describe_balance(value),
            age_min,
            errors,
            bar,
        )
        limit = self.policy.cache_timeout_minutes
        if age_min > limit:
            log.warning(
                "⚠️  Fallback balance is %.1f minutes old (over %.0f): treat it with care",
                age_min,
                limit,
            )

    def _persist(self, key: tuple[str, str]) -> None:
        with self._lock:
            entry = self._last.get(key)
            health = self._health.get(key[0], AccountHealth())
            self._persisted_at[key] = self.clock()
        record_key = f"{key[0]}|{key[1]}"

        def apply(data: dict[str, Any]) -> None:
            # the newest write wins (sequence order): a wall-clock comparison would let a balance
            # saved under a clock running fast shadow every later one
            if entry is not None:
                value = stored_balance(entry[0])  # JSON-safe: Decimal, numpy, no ``info``
                data.setdefault("balances", {})[record_key] = {
                    "account": key[0],
                    "call": key[1],
                    "value": value,
                    "fetched_at": utc_iso(entry[1]),
                }
            data.setdefault("accounts", {})[key[0]] = {
                "consecutive_errors": health.consecutive_errors,
                "last_error": health.last_error,
                "last_error_at": utc_iso(health.last_error_at) if health.last_error_at else None,
                "last_success_at": utc_iso(health.last_success_at)
                if health.last_success_at
                else None,
            }

        try:
            self.store.update(
                STATE, apply, keys=[("balances", record_key), ("accounts", key[0])], urgent=True
            )
        except StoreError as exc:
            log.error("last known balance not saved (%s); it stays in memory", exc)

    def _load(self) -> None:
        """Read persisted balances once, so a restart during an outage still has one (with its true
        age)."""
        if self._loaded:
            return
        self._loaded = True
        try:
            data = self.store.read(STATE)
        except StoreError as exc:
            log.error("last known balances not loaded (%s)", exc)
            return
        with self._lock:
            for record in data.get("balances", {}).values():
                try:
                    key = (str(record["account"]), str(record["call"]))
                    fetched_at = parse_utc_iso(record["fetched_at"])
                except (KeyError, TypeError, ValueError):
                    continue
                if is_valid_balance(record.get("value")) and key not in self._last:
                    self._last[key] = (record["value"], fetched_at)
            for account, raw in data.get("accounts", {}).items():
                if account not in self._health and isinstance(raw, dict):
                    self._health[account] = AccountHealth(
                        consecutive_errors=int(raw.get("consecutive_errors") or 0),
                        last_error=raw.get("last_error"),
                        last_success_at=parse_utc_iso(raw["last_success_at"])
                        if raw.get("last_success_at")
                        else None,
                    )
