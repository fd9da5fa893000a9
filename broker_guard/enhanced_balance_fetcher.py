"""Seed component: the Enhanced Balance Fetcher, where the seed's imports look for it.

``get_enhanced_balance_fetcher()`` gives the process's shared fetcher, built
from the configuration. The fetcher itself lives in
``broker_guard.guard.balance_fetcher``; its retry decision in ``broker_guard.core.retry``.
"""

from __future__ import annotations

from typing import Any

from broker_guard._singleton import SingletonFactory
from broker_guard.config import GuardConfig
from broker_guard.core.validate import is_valid_balance
from broker_guard.guard.balance_fetcher import (
    STATE,
    AccountHealth,
    EnhancedBalanceFetcher,
    describe_balance,
)
from broker_guard.state.select import store_from_config


def _build_fetcher(
    max_attempts: int | None = None, base_delay: float | None = None
) -> EnhancedBalanceFetcher:
    balance: dict[str, Any] = {
        k: v
        for k, v in (("max_attempts", max_attempts), ("base_delay", base_delay))
        if v is not None
    }
    config = GuardConfig.load(balance=balance)
    store = store_from_config(config)
    return EnhancedBalanceFetcher(config.balance, store=store, account=config.guard.account)


_factory: SingletonFactory[EnhancedBalanceFetcher] = SingletonFactory(
    "get_enhanced_balance_fetcher", _build_fetcher
)


def get_enhanced_balance_fetcher(
    max_attempts: int | None = None, base_delay: float | None = None
) -> EnhancedBalanceFetcher:
    """The process's shared fetcher (seed API). A later call with different arguments raises
    ConfigError."""
    return _factory.get(max_attempts=max_attempts, base_delay=base_delay)


def reset_enhanced_balance_fetcher() -> None:
    """Forget the shared fetcher, so the next ``get_enhanced_balance_fetcher`` builds a new one."""
    _factory.reset()


__all__ = [
    "AccountHealth",
    "EnhancedBalanceFetcher",
    "STATE",
    "describe_balance",
    "get_enhanced_balance_fetcher",
    "is_valid_balance",
    "reset_enhanced_balance_fetcher",
]
