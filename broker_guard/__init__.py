"""broker_guard: a drop-in guard between a trading bot's strategy and its broker.

``GuardedBroker(broker)`` behaves like ``broker``; behind it, balance calls
retry and fall back, price calls refuse frozen and restricted symbols and
record failures, entry orders on them are refused, and ``dust()`` /
``normalize()`` close small positions safely.
"""

from broker_guard.broker_dust_cleanup import BrokerDustCleanup, DustResult, get_broker_dust_cleanup
from broker_guard.classify import FailureKind, classify
from broker_guard.clock import FakeClock
from broker_guard.config import BalancePolicy, DustPolicy, FreezePolicy, GuardConfig, GuardSettings, NormalizationPolicy
from broker_guard.enhanced_balance_fetcher import EnhancedBalanceFetcher, get_enhanced_balance_fetcher
from broker_guard.errors import (
    BalanceUnavailableError,
    BrokerGuardError,
    ConfigError,
    GuardRefusedError,
    InvalidResponseError,
    LiquidationError,
    StoreError,
    StoreLockTimeoutError,
    SymbolFrozenError,
    SymbolRestrictedError,
)
from broker_guard.events import GuardEvent
from broker_guard.paper import PaperBroker
from broker_guard.positions import Position
from broker_guard.profiles import CCXT, GENERIC, MethodSpec, Profile
from broker_guard.proxy import GuardedBroker
from broker_guard.redis_store import RedisStore
from broker_guard.store import JsonFileStore, MemoryStore, Store
from broker_guard.symbol_freeze_manager import FrozenSymbol, SymbolFreezeManager, get_symbol_freeze_manager
from broker_guard.user_account_normalization import run_normalization_pass

__version__ = "0.1.0"

__all__ = [
    "CCXT",
    "GENERIC",
    "BalancePolicy",
    "BalanceUnavailableError",
    "BrokerDustCleanup",
    "BrokerGuardError",
    "ConfigError",
    "DustPolicy",
    "DustResult",
    "EnhancedBalanceFetcher",
    "FailureKind",
    "FakeClock",
    "FreezePolicy",
    "FrozenSymbol",
    "GuardConfig",
    "GuardEvent",
    "GuardRefusedError",
    "GuardSettings",
    "GuardedBroker",
    "InvalidResponseError",
    "JsonFileStore",
    "LiquidationError",
    "MemoryStore",
    "MethodSpec",
    "NormalizationPolicy",
    "PaperBroker",
    "Position",
    "Profile",
    "RedisStore",
    "Store",
    "StoreError",
    "StoreLockTimeoutError",
    "SymbolFreezeManager",
    "SymbolFrozenError",
    "SymbolRestrictedError",
    "classify",
    "get_broker_dust_cleanup",
    "get_enhanced_balance_fetcher",
    "get_symbol_freeze_manager",
    "run_normalization_pass",
]
