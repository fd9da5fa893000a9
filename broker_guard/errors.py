"""Exception types: one base, each carrying its cause and saying what to do."""

from __future__ import annotations

from typing import ClassVar


class BrokerGuardError(Exception):
    """Base of every error broker_guard raises itself.

    ``cause`` is the broker's exception when there was one, so callers can
    inspect it without walking ``__cause__``.
    """

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ConfigError(BrokerGuardError, ValueError):
    """A configuration key has a wrong type, a bad value, or is unknown."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"config {key}={value!r} is invalid: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


class NothingToGuardError(BrokerGuardError, TypeError):
    """The profile found no balance, price or order method on the broker: wrapping it would
    guard nothing. The message names the methods looked for and how to map the broker's own."""


class GuardRefusedError(BrokerGuardError):
    """The guard refused a call before it reached the broker. ``reason`` names why in one word
    (the ``reason`` label of ``broker_guard_refusals_total``)."""

    reason: ClassVar[str] = "refused"

    def __init__(self, message: str, *, symbol: str, cause: BaseException | None = None) -> None:
        super().__init__(message, cause=cause)
        self.symbol = symbol


class SymbolFrozenError(GuardRefusedError):
    """The symbol is frozen after repeated failures; exits stay allowed."""

    reason = "frozen"


class StateUnconfirmedError(SymbolFrozenError):
    """An entry refused because the guard cannot read its shared state: it cannot confirm the
    symbol is not frozen (a ``SymbolFrozenError``, so code that skips frozen symbols skips it)."""

    reason = "unconfirmed"


class SymbolRestrictedError(GuardRefusedError):
    """The symbol is on the restricted list and is never traded."""

    reason = "restricted"


class TradingHaltedError(GuardRefusedError):
    """An entry refused because trading is halted (by an operator, or automatically); exits stay
    allowed. ``symbol`` is the order's symbol; the halt names no symbol."""

    reason = "halted"


class BalanceUnavailableError(BrokerGuardError):
    """Every attempt failed and no usable last-known balance exists."""


class InvalidResponseError(BrokerGuardError):
    """The broker answered, but with a value that cannot be right (None, NaN, negative...)."""


class StoreError(BrokerGuardError):
    """Persistent state could not be read or written."""


class StoreLockTimeoutError(StoreError):
    """Another process held the state file lock longer than the timeout."""


class LiquidationError(BrokerGuardError):
    """A close order for a dust or small position failed at the broker."""
