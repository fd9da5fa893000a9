"""Seed component: the Symbol Freeze Manager, where the seed's imports look for it.

``get_symbol_freeze_manager()`` gives the process's shared manager, built from
the configuration (file, environment, arguments). The manager itself lives in
``broker_guard.guard.freeze_manager``; its rules in ``broker_guard.core.freeze``.
"""

from __future__ import annotations

from typing import Any

from broker_guard._singleton import SingletonFactory
from broker_guard.config import GuardConfig
from broker_guard.guard.freeze_manager import (
    ALLOW,
    PROBE,
    RESTRICTED,
    STATE,
    FrozenSymbol,
    SymbolFreezeManager,
    shipped_restricted_symbols,
)
from broker_guard.state.select import store_from_config


def _build_manager(
    failure_threshold: int | None = None,
    cooldown_hours: float | None = None,
    data_dir: str | None = None,
) -> SymbolFreezeManager:
    overrides: dict[str, Any] = {}
    freeze = {
        k: v
        for k, v in (("failure_threshold", failure_threshold), ("cooldown_hours", cooldown_hours))
        if v is not None
    }
    if freeze:
        overrides["freeze"] = freeze
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    config = GuardConfig.load(**overrides)
    store = store_from_config(config)
    return SymbolFreezeManager(
        config.freeze, store=store, refresh_interval=config.guard.refresh_interval_seconds
    )


_factory: SingletonFactory[SymbolFreezeManager] = SingletonFactory(
    "get_symbol_freeze_manager", _build_manager
)


def get_symbol_freeze_manager(
    failure_threshold: int | None = None,
    cooldown_hours: float | None = None,
    data_dir: str | None = None,
) -> SymbolFreezeManager:
    """The process's shared manager (seed API). A later call with different arguments raises
    ConfigError."""
    return _factory.get(
        failure_threshold=failure_threshold, cooldown_hours=cooldown_hours, data_dir=data_dir
    )


def reset_symbol_freeze_manager() -> None:
    """Forget the shared manager, so the next ``get_symbol_freeze_manager`` builds a new one."""
    _factory.reset()


__all__ = [
    "ALLOW",
    "FrozenSymbol",
    "PROBE",
    "RESTRICTED",
    "STATE",
    "SymbolFreezeManager",
    "get_symbol_freeze_manager",
    "reset_symbol_freeze_manager",
    "shipped_restricted_symbols",
]
