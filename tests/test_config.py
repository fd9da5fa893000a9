from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest

from broker_guard import ConfigError, GuardConfig
from broker_guard.config import ENV_VARS, SECTIONS

SEED_FILE = {
    "dust_cleanup": {"threshold_usd": 1.00, "dry_run": False, "enabled": True, "schedule": "daily"},
    "balance_fetcher": {"max_attempts": 3, "base_delay": 2.0, "cache_timeout_minutes": 30},
    "symbol_freeze": {
        "failure_threshold": 3,
        "cooldown_hours": 24.0,
        "manual_review_required": True,
        "auto_unfreeze": False,
    },
    "normalization": {
        "minimum_position_usd": 7.50,
        "consolidation_threshold_usd": 10.00,
        "enabled": True,
        "run_on_startup": True,
    },
}


def test_defaults_are_the_seeds() -> None:
    config = GuardConfig.load(env={})
    assert config.dust.threshold_usd == 1.0 and config.dust.dry_run is False
    assert (config.balance.max_attempts, config.balance.base_delay, config.balance.max_delay) == (
        3,
        2.0,
        30.0,
    )
    assert (config.freeze.failure_threshold, config.freeze.cooldown_hours) == (3, 24.0)
    assert (
        config.normalization.minimum_position_usd,
        config.normalization.consolidation_threshold_usd,
    ) == (7.5, 10.0)
    assert config.guard.data_dir == "./data"


def test_seed_config_file_is_read_from_the_default_path(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cleanup_config.json").write_text(
        json.dumps(SEED_FILE | {"symbol_freeze": {"auto_unfreeze": False}})
    )
    assert GuardConfig.load(env={}).freeze.auto_unfreeze is False


def test_precedence_defaults_file_env_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "dust_cleanup": {"threshold_usd": 2.0, "schedule": "hourly"},
                "balance_fetcher": {"max_attempts": 4},
            }
        )
    )
    env = {"DUST_THRESHOLD_USD": "3.5", "BROKER_GUARD_CONFIG": str(path)}
    config = GuardConfig.load(env=env, balance={"base_delay": 0.5})
    assert config.dust.threshold_usd == 3.5  # env over file
    assert config.dust.schedule == "hourly"  # file over default
    assert config.balance.max_attempts == 4
    assert config.balance.base_delay == 0.5  # kwargs over all
    assert GuardConfig.load(env=env, dust={"threshold_usd": 0.5}).dust.threshold_usd == 0.5


@pytest.mark.parametrize(
    ("var", "raw", "section", "key", "expected"),
    [
        ("DUST_THRESHOLD_USD", "1.25", "dust", "threshold_usd", 1.25),
        ("DUST_CLEANUP_DRY_RUN", "true", "dust", "dry_run", True),
        ("BALANCE_FETCH_MAX_ATTEMPTS", "5", "balance", "max_attempts", 5),
        ("BALANCE_FETCH_BASE_DELAY", "0.5", "balance", "base_delay", 0.5),
        ("SYMBOL_FREEZE_THRESHOLD", "4", "freeze", "failure_threshold", 4),
        ("SYMBOL_FREEZE_COOLDOWN_HOURS", "12", "freeze", "cooldown_hours", 12.0),
        ("MINIMUM_POSITION_USD", "5", "normalization", "minimum_position_usd", 5.0),
        ("CONSOLIDATION_THRESHOLD_USD", "20", "normalization", "consolidation_threshold_usd", 20.0),
        ("BROKER_GUARD_DATA_DIR", "/tmp/x", "guard", "data_dir", "/tmp/x"),
        (
            "BROKER_GUARD_STORE_URL",
            "redis://10.0.0.5:6379/2",
            "guard",
            "store_url",
            "redis://10.0.0.5:6379/2",
        ),
        ("BROKER_GUARD_STORE_PREFIX", "fleet-a", "guard", "store_prefix", "fleet-a"),
    ],
)
def test_every_environment_variable(
    var: str, raw: str, section: str, key: str, expected: object
) -> None:
    assert var in ENV_VARS
    assert getattr(getattr(GuardConfig.load(env={var: raw}), section), key) == expected


@pytest.mark.parametrize("var", sorted(v for v in ENV_VARS if not v.startswith("BROKER_GUARD_")))
def test_bad_environment_value_names_the_variable(var: str) -> None:
    with pytest.raises(ConfigError) as info:
        GuardConfig.load(env={var: "lots"})
    assert var in str(info.value) and "lots" in str(info.value)


@pytest.mark.parametrize(
    ("var", "raw", "key"),
    [
        ("BROKER_GUARD_STORE_URL", "http://cache:6379", "guard.store_url"),
        ("BROKER_GUARD_STORE_URL", "cache:6379", "guard.store_url"),
        ("BROKER_GUARD_STORE_PREFIX", "fleet a", "guard.store_prefix"),
        ("BROKER_GUARD_STORE_PREFIX", "x" * 65, "guard.store_prefix"),
    ],
)
def test_bad_store_settings_name_the_key(var: str, raw: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        GuardConfig.load(env={var: raw})
    assert key in str(info.value)


def test_a_bad_store_url_is_echoed_without_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        GuardConfig.load(env={"BROKER_GUARD_STORE_URL": "http://ops:hunter2hunter2@cache:6379/0"})
    assert "hunter2" not in str(info.value) and "ops:***@cache" in str(info.value)


def _bad_values(tp: object) -> list[object]:
    base = next((t for t in typing.get_args(tp) if t is not type(None)), tp)
    if base is bool:
        return ["yes", 1, None]
    if base is int:
        return ["3", 2.5, True, -1]
    if base is float:
        return ["2", True, -1.0, math.nan, math.inf]
    if base is str:
        return [5, ""]
    return [["USD", 3], "USD"]


ALL_KEYS = [
    (section, f.name, typing.get_type_hints(cls)[f.name])
    for section, (_attr, cls) in SECTIONS.items()
    for f in dataclasses.fields(cls)
]


@pytest.mark.parametrize(
    ("section", "key", "tp"), ALL_KEYS, ids=[f"{s}.{k}" for s, k, _ in ALL_KEYS]
)
def test_every_key_rejects_bad_values(section: str, key: str, tp: object) -> None:
    optional = type(None) in typing.get_args(tp)
    for bad in _bad_values(tp):
        if bad is None and optional:
            continue
        if key == "account" and bad == "":
            continue
        with pytest.raises(ConfigError) as info:
            GuardConfig.from_mapping({section: {key: bad}})
        assert f"{section}.{key}" in str(info.value)


def test_unknown_key_and_section_are_refused_with_the_allowed_names() -> None:
    with pytest.raises(ConfigError, match=r"dust_cleanup.threshold.*allowed: .*threshold_usd"):
        GuardConfig.from_mapping({"dust_cleanup": {"threshold": 1}})
    with pytest.raises(ConfigError, match="unknown section"):
        GuardConfig.from_mapping({"dust": {"threshold_usd": 1}})
    with pytest.raises(ConfigError, match="name the section"):
        GuardConfig.load(env={}, enabled=True)


def test_consolidation_below_minimum_is_refused() -> None:
    with pytest.raises(ConfigError, match="consolidation_threshold_usd"):
        GuardConfig.load(env={}, normalization={"minimum_position_usd": 20.0})


def test_schedule_forms() -> None:
    for ok in ("off", "daily", "hourly", "every 30m", "every 6h", "every 90s"):
        assert GuardConfig.load(env={}, dust={"schedule": ok}).dust.schedule == ok
    with pytest.raises(ConfigError, match="schedule"):
        GuardConfig.load(env={}, dust={"schedule": "weekly"})


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="existing JSON file"):
        GuardConfig.load(tmp_path / "nope.json", env={})
    broken = tmp_path / "b.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="readable JSON"):
        GuardConfig.load(broken, env={})


def test_round_trip_through_mapping() -> None:
    config = GuardConfig.load(env={}, dust={"threshold_usd": 2.0}, data_dir="d")
    assert GuardConfig.from_mapping(config.to_mapping()) == config
