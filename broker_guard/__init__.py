"""broker_guard: a drop-in guard between a trading bot's strategy and its broker.

``GuardedBroker(broker)`` (or ``wrap(broker)``, typed as the broker) behaves
like ``broker``; behind it, balance calls retry and fall back, price calls
refuse frozen and restricted symbols and record failures, entry orders on
them are refused, and ``dust()`` / ``normalize()`` close small positions
safely.

The seed's components are where the seed's imports look for them:
``broker_guard.enhanced_balance_fetcher``, ``.symbol_freeze_manager``,
``.broker_dust_cleanup`` and ``.user_account_normalization``. Test helpers (a
manual clock, the paper broker) are in ``broker_guard.testing``. Every name
loads on first use (the exceptions excepted), so ``import broker_guard`` and the
CLI's ``--help`` start fast and load no optional dependency.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# bound here, not on first use: the submodule of the same name would shadow the function
from broker_guard.classify import FailureKind as FailureKind
from broker_guard.classify import classify as classify
from broker_guard.errors import (
    BalanceUnavailableError,
    BrokerGuardError,
    ConfigError,
    GuardRefusedError,
    InvalidResponseError,
    LiquidationError,
    NothingToGuardError,
    StateUnconfirmedError,
    StoreError,
    StoreLockTimeoutError,
    SymbolFrozenError,
    SymbolRestrictedError,
    TradingHaltedError,
)

if TYPE_CHECKING:  # the public names, for type checkers; at run time they load on first use
    from broker_guard.config import GuardConfig
    from broker_guard.events import GuardEvent
    from broker_guard.guard.profiles import MethodSpec, Profile
    from broker_guard.guarded import GuardedBroker, guard_of, wrap
    from broker_guard.liquidation.dust import DustResult
    from broker_guard.liquidation.positions import Position
    from broker_guard.state.base import Store
    from broker_guard.state.files import JsonFileStore
    from broker_guard.state.memory import MemoryStore
    from broker_guard.state.redis_store import RedisStore

__version__ = "0.1.0"

__all__ = [
    "BalanceUnavailableError",
    "BrokerGuardError",
    "ConfigError",
    "DustResult",
    "GuardConfig",
    "GuardEvent",
    "GuardRefusedError",
    "GuardedBroker",
    "InvalidResponseError",
    "JsonFileStore",
    "LiquidationError",
    "NothingToGuardError",
    "MemoryStore",
    "MethodSpec",
    "Position",
    "Profile",
    "RedisStore",
    "Store",
    "StoreError",
    "StoreLockTimeoutError",
    "StateUnconfirmedError",
    "SymbolFrozenError",
    "SymbolRestrictedError",
    "TradingHaltedError",
    "guard_of",
    "wrap",
]

# name -> module: resolved on first use (PEP 562), so importing the package stays light
_ON_FIRST_USE = {
    "GuardConfig": "broker_guard.config",
    "GuardEvent": "broker_guard.events",
    "MethodSpec": "broker_guard.guard.profiles",
    "Profile": "broker_guard.guard.profiles",
    "GuardedBroker": "broker_guard.guarded",
    "guard_of": "broker_guard.guarded",
    "wrap": "broker_guard.guarded",
    "DustResult": "broker_guard.liquidation.dust",
    "Position": "broker_guard.liquidation.positions",
    "Store": "broker_guard.state.base",
    "JsonFileStore": "broker_guard.state.files",
    "MemoryStore": "broker_guard.state.memory",
    "RedisStore": "broker_guard.state.redis_store",
    "BalancePolicy": "broker_guard.config",
    "DustPolicy": "broker_guard.config",
    "FreezePolicy": "broker_guard.config",
    "GuardSettings": "broker_guard.config",
    "HaltPolicy": "broker_guard.config",
    "NormalizationPolicy": "broker_guard.config",
    "CCXT": "broker_guard.guard.profiles",
    "GENERIC": "broker_guard.guard.profiles",
    "FakeClock": "broker_guard.testing",
    "PaperBroker": "broker_guard.testing",
    "BrokerDustCleanup": "broker_guard.broker_dust_cleanup",
    "get_broker_dust_cleanup": "broker_guard.broker_dust_cleanup",
    "EnhancedBalanceFetcher": "broker_guard.enhanced_balance_fetcher",
    "get_enhanced_balance_fetcher": "broker_guard.enhanced_balance_fetcher",
    "FrozenSymbol": "broker_guard.symbol_freeze_manager",
    "SymbolFreezeManager": "broker_guard.symbol_freeze_manager",
    "get_symbol_freeze_manager": "broker_guard.symbol_freeze_manager",
    "run_normalization_pass": "broker_guard.user_account_normalization",
}


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'broker_guard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
