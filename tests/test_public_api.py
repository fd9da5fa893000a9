"""The public surface: what ``__all__`` offers, older names that still resolve, a light import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import broker_guard


def test_everything_in_all_resolves() -> None:
    for name in broker_guard.__all__:
        assert getattr(broker_guard, name) is not None


def test_names_outside_all_still_resolve_to_their_homes() -> None:
    for name, module in broker_guard._ON_FIRST_USE.items():
        assert getattr(broker_guard, name) is getattr(importlib.import_module(module), name)


def test_classify_is_the_function_not_its_module() -> None:
    """The submodule ``broker_guard.classify`` must not shadow the function of the same name."""
    from broker_guard import FailureKind, classify

    assert classify(TimeoutError()) is FailureKind.TRANSIENT


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'get_curent_price'"):
        broker_guard.get_curent_price  # noqa: B018


def test_importing_the_package_loads_no_optional_dependency() -> None:
    code = (
        "import sys, broker_guard, broker_guard.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'redis', 'ccxt', 'prometheus_client'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_seed_modules_keep_the_names_they_had() -> None:
    from broker_guard import broker_dust_cleanup, enhanced_balance_fetcher, symbol_freeze_manager

    for module, names in (
        (symbol_freeze_manager, ("ALLOW", "PROBE", "STATE", "RESTRICTED", "FrozenSymbol")),
        (enhanced_balance_fetcher, ("is_valid_balance", "describe_balance", "AccountHealth")),
        (broker_dust_cleanup, ("BrokerDustCleanup", "DustResult")),
    ):
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert callable(broker_dust_cleanup.BrokerDustCleanup.scan)


def test_dir_lists_the_names_resolved_on_first_use() -> None:
    assert {"FakeClock", "PaperBroker", "GuardedBroker", "RedisStore"} <= set(dir(broker_guard))
