"""GuardConfig: defaults < JSON file < environment < keyword arguments, every key validated.

The JSON file has the seed's format (``config/cleanup_config.json``: sections
``dust_cleanup``, ``balance_fetcher``, ``symbol_freeze``, ``normalization``)
plus an optional ``guard`` section for settings the seed did not have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker_guard.errors import ConfigError
from broker_guard.redact import redact

DEFAULT_CONFIG_PATH = Path("config") / "cleanup_config.json"
SCHEDULE_PATTERN = re.compile(r"^(off|daily|hourly|every\s+\d+(\.\d+)?\s*[smhd])$")


@dataclass(frozen=True)
class DustPolicy:
    threshold_usd: float = 1.00
    dry_run: bool = False
    enabled: bool = True
    schedule: str = "daily"  # off | daily | hourly | "every 30m" / "every 6h" / "every 90s"
    max_usd_per_run: float | None = None  # cap on the USD value liquidated by one run


@dataclass(frozen=True)
class BalancePolicy:
    max_attempts: int = 3
    base_delay: float = 2.0
    max_delay: float = 30.0
    jitter: bool = False
    max_total_seconds: float | None = None  # budget for the whole call, retries included
    cache_timeout_minutes: float = 30.0  # fallback older than this is served with a warning
    max_fallback_age_minutes: float | None = None  # fallback older than this is refused
    persist_interval_seconds: float = 60.0  # how often a fresh balance is written to disk


@dataclass(frozen=True)
class FreezePolicy:
    failure_threshold: int = 3
    cooldown_hours: float = 24.0
    manual_review_required: bool = True
    auto_unfreeze: bool = True
    count_transient_failures: bool = False  # an outage must not freeze the universe
    # price calls on a frozen symbol return None instead of raising
    frozen_returns_none: bool = False
    alert_frozen_count: int = 5  # health alert above this many frozen symbols


@dataclass(frozen=True)
class HaltPolicy:
    """Automatic halts, off by default: a broker-wide problem halts every entry until an operator
    resumes. ``after_balance_failures``: balance attempts failed in a row on one account;
    ``after_freezes``: symbols the guard froze within ``freeze_window_minutes``."""

    after_balance_failures: int | None = None
    after_freezes: int | None = None
    freeze_window_minutes: float = 60.0


@dataclass(frozen=True)
class NormalizationPolicy:
    minimum_position_usd: float = 7.50
    consolidation_threshold_usd: float = 10.00
    enabled: bool = True
    run_on_startup: bool = True
    close_consolidation_candidates: bool = False  # flagged for review unless set


@dataclass(frozen=True)
class GuardSettings:
    data_dir: str = "./data"
    account: str | None = None  # names the account in balance and audit records
    quote_assets: tuple[str, ...] = (
        "USD",
        "USDT",
        "USDC",
        "BUSD",
        "DAI",
        "TUSD",
        "EUR",
        "GBP",
        "USDP",
        "FDUSD",
    )
    lock_timeout_seconds: float = 10.0
    # how often another process's changes are looked for: a CLI change reaches a bot within 1 s
    refresh_interval_seconds: float = 0.5
    value_tolerance: float = 0.25  # computed vs broker-reported position value, relative
    # None: JSON files in data_dir; redis://host:6379/0 for state shared by a fleet
    store_url: str | None = None
    # Redis key prefix: one per deployment sharing a Redis database
    store_prefix: str = "broker_guard"
    # Redis only: the last known balance expires this long after it was saved
    balance_ttl_hours: float | None = None
    audit_max_records: int = 100_000  # Redis only: the audit stream keeps this many newest records
    # names this bot in heartbeats (broker-guard health, metrics); default: its account
    name: str | None = None
    heartbeat_seconds: float = 30.0  # a guard in use writes its heartbeat this often; 0: never
    # broker-guard health alerts on a bot whose last heartbeat is older than this
    not_seen_minutes: float = 10.0


# JSON section name -> (attribute on GuardConfig, policy class)
SECTIONS: Mapping[str, tuple[str, type]] = {
    "dust_cleanup": ("dust", DustPolicy),
    "balance_fetcher": ("balance", BalancePolicy),
    "symbol_freeze": ("freeze", FreezePolicy),
    "normalization": ("normalization", NormalizationPolicy),
    "trading_halt": ("halt", HaltPolicy),
    "guard": ("guard", GuardSettings),
}

# the seed's eight environment variables, plus data dir and config path
ENV_VARS: Mapping[str, tuple[str, str]] = {
    "DUST_THRESHOLD_USD": ("dust_cleanup", "threshold_usd"),
    "DUST_CLEANUP_DRY_RUN": ("dust_cleanup", "dry_run"),
    "BALANCE_FETCH_MAX_ATTEMPTS": ("balance_fetcher", "max_attempts"),
    "BALANCE_FETCH_BASE_DELAY": ("balance_fetcher", "base_delay"),
    "SYMBOL_FREEZE_THRESHOLD": ("symbol_freeze", "failure_threshold"),
    "SYMBOL_FREEZE_COOLDOWN_HOURS": ("symbol_freeze", "cooldown_hours"),
    "MINIMUM_POSITION_USD": ("normalization", "minimum_position_usd"),
    "CONSOLIDATION_THRESHOLD_USD": ("normalization", "consolidation_threshold_usd"),
    "TRADING_HALT_AFTER_BALANCE_FAILURES": ("trading_halt", "after_balance_failures"),
    "TRADING_HALT_AFTER_FREEZES": ("trading_halt", "after_freezes"),
    "TRADING_HALT_FREEZE_WINDOW_MINUTES": ("trading_halt", "freeze_window_minutes"),
    "BROKER_GUARD_DATA_DIR": ("guard", "data_dir"),
    "BROKER_GUARD_STORE_URL": ("guard", "store_url"),
    "BROKER_GUARD_STORE_PREFIX": ("guard", "store_prefix"),
    "BROKER_GUARD_NAME": ("guard", "name"),
}
CONFIG_PATH_ENV = "BROKER_GUARD_CONFIG"

_POSITIVE = {
    "max_attempts",
    "failure_threshold",
    "lock_timeout_seconds",
    "max_total_seconds",
    "audit_max_records",
    "balance_ttl_hours",
    "after_balance_failures",
    "after_freezes",
    "freeze_window_minutes",
    "not_seen_minutes",
}
STORE_URL_PATTERN = re.compile(r"^(redis|rediss|unix)://")
STORE_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class GuardConfig:
    """All settings, one frozen dataclass per section of the seed's config file."""

    dust: DustPolicy = field(default_factory=DustPolicy)
    balance: BalancePolicy = field(default_factory=BalancePolicy)
    freeze: FreezePolicy = field(default_factory=FreezePolicy)
    normalization: NormalizationPolicy = field(default_factory=NormalizationPolicy)
    halt: HaltPolicy = field(default_factory=HaltPolicy)
    guard: GuardSettings = field(default_factory=GuardSettings)

    def __post_init__(self) -> None:
        for section, (attr, cls) in SECTIONS.items():
            policy = getattr(self, attr)
            if not isinstance(policy, cls):
                raise ConfigError(section, policy, f"a {cls.__name__}")
            for f in dataclasses.fields(cls):
                _validate(f"{section}.{f.name}", getattr(policy, f.name), _field_type(cls, f.name))
        if self.normalization.consolidation_threshold_usd < self.normalization.minimum_position_usd:
            raise ConfigError(
                "normalization.consolidation_threshold_usd",
                self.normalization.consolidation_threshold_usd,
                "must be at least normalization.minimum_position_usd",
            )

    @property
    def data_dir(self) -> Path:
        return Path(self.guard.data_dir)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> GuardConfig:
        """Build the config from defaults, the JSON file, the environment, then ``overrides``.

        ``path`` defaults to ``$BROKER_GUARD_CONFIG``, else ``config/cleanup_config.json``
        when it exists. ``overrides`` take a section mapping (``balance={"max_attempts": 5}``,
        seed or short section names) or a flat key of any section (``dry_run=True`` is
        ambiguous and refused; ``data_dir="x"`` is not).
        """
        env = os.environ if env is None else env
        layers: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        file_path = path if path is not None else env.get(CONFIG_PATH_ENV)
        if file_path is None and DEFAULT_CONFIG_PATH.is_file():
            file_path = DEFAULT_CONFIG_PATH
        if file_path is not None:
            _merge(layers, _read_file(Path(file_path)), source=str(file_path))
        for var, (section, key) in ENV_VARS.items():
            if var in env:
                layers[section][key] = _from_env(
                    var, env[var], _field_type(SECTIONS[section][1], key)
                )
        _merge(layers, _normalise_overrides(overrides), source="keyword arguments")
        return cls.from_mapping(layers)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GuardConfig:
        """Build from a mapping shaped like the JSON file; unknown sections and keys are refused."""
        kwargs: dict[str, Any] = {}
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(
                    section, values, f"unknown section; allowed: {', '.join(SECTIONS)}"
                )
            attr, policy_cls = SECTIONS[section]
            if not isinstance(values, Mapping):
                raise ConfigError(section, values, "a JSON object of settings")
            names = {f.name for f in dataclasses.fields(policy_cls)}
            clean: dict[str, Any] = {}
            for key, value in values.items():
                if key not in names:
                    raise ConfigError(
                        f"{section}.{key}",
                        value,
                        f"unknown key; allowed: {', '.join(sorted(names))}",
                    )
                if key == "quote_assets" and isinstance(value, list):
                    value = tuple(value)
                clean[key] = value
            kwargs[attr] = policy_cls(**clean)
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """The JSON-file shape of this config (round-trips through ``from_mapping``)."""
        out: dict[str, dict[str, Any]] = {}
        for section, (attr, _cls) in SECTIONS.items():
            values = dataclasses.asdict(getattr(self, attr))
            out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    def replace(self, **overrides: Any) -> GuardConfig:
        """A copy with ``overrides`` applied the way ``load`` applies keyword arguments."""
        layers = self.to_mapping()
        _merge(layers, _normalise_overrides(overrides), source="keyword arguments")
        return GuardConfig.from_mapping(layers)


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _validate(key: str, value: object, expected: Any) -> None:
    """Refuse a setting of the wrong type or out of range, naming what is allowed."""
    optional = type(None) in typing.get_args(expected)
    if value is None:
        if optional:
            return
        raise ConfigError(key, value, "a value is required")
    base = (
        next((t for t in typing.get_args(expected) if t is not type(None)), expected)
        if optional
        else expected
    )
    name = key.rsplit(".", 1)[1]
    check = _CHECKS.get(base)
    if check is not None:
        check(key, name, value)
    elif typing.get_origin(base) is tuple:
        _check_strings(key, value)


def _check_bool(key: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")


def _check_int(key: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, "a whole number")
    if value < (1 if name in _POSITIVE else 0):
        raise ConfigError(key, value, "at least 1" if name in _POSITIVE else "zero or more")


def _check_float(key: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, "a number")
    if not math.isfinite(value):
        raise ConfigError(key, value, "a finite number (not NaN or infinity)")
    if value < 0 or (name in _POSITIVE and value == 0):
        raise ConfigError(key, value, "greater than zero" if name in _POSITIVE else "zero or more")
    if name == "value_tolerance" and value >= 1:
        raise ConfigError(key, value, "a fraction below 1 (0.25 = 25%)")


# settings whose text must match a pattern: (pattern, what is allowed, masked when shown)
_TEXT_RULES: Mapping[str, tuple[re.Pattern[str], str, bool]] = {
    "schedule": (
        SCHEDULE_PATTERN,
        "off, daily, hourly, or an interval like 'every 30m' (s, m, h, d)",
        False,
    ),
    "store_url": (
        STORE_URL_PATTERN,
        "a redis://, rediss:// or unix:// URL (leave it unset for JSON files)",
        True,
    ),
    "store_prefix": (STORE_PREFIX_PATTERN, "1-64 characters of letters, digits and _ . : -", False),
}


def _check_str(key: str, name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a non-empty string")
    rule = _TEXT_RULES.get(name)
    if rule is None:
        return
    pattern, allowed, masked = rule
    text = value.strip().lower() if name == "schedule" else value
    if not pattern.match(text):
        raise ConfigError(key, redact(value) if masked else value, allowed)


def _check_strings(key: str, value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, value, "a list of non-empty strings")


_CHECKS: Mapping[Any, Any] = {
    bool: _check_bool,
    int: _check_int,
    float: _check_float,
    str: _check_str,
}


def _from_env(var: str, raw: str, expected: Any) -> Any:
    text = raw.strip()
    base = next((t for t in typing.get_args(expected) if t is not type(None)), expected)
    try:
        if base is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        allowed = {bool: "true or false", int: "a whole number", float: "a number"}[base]
        raise ConfigError(var, raw, allowed) from None
    return text


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file", str(path), "an existing JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError("config file", str(path), f"readable JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise ConfigError("config file", str(path), "a JSON object with sections")
    return data


def _short_to_section(name: str) -> str | None:
    for section, (attr, _cls) in SECTIONS.items():
        if name in (section, attr):
            return section
    return None


def _normalise_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section = _short_to_section(key)
        if section is not None:
            if isinstance(value, Mapping):
                out.setdefault(section, {}).update(value)
                continue
            _attr, cls = SECTIONS[section]
            if (
                isinstance(value, cls)
                and dataclasses.is_dataclass(value)
                and not isinstance(value, type)
            ):
                out.setdefault(section, {}).update(dataclasses.asdict(value))
                continue
            raise ConfigError(key, value, f"a mapping of {section} settings")
        owners = [
            s
            for s, (_a, cls) in SECTIONS.items()
            if key in {f.name for f in dataclasses.fields(cls)}
        ]
        if len(owners) != 1:
            allowed = (
                "name the section, e.g. dust={'dry_run': True}" if owners else "unknown setting"
            )
            raise ConfigError(key, value, allowed)
        out.setdefault(owners[0], {})[key] = value
    return out


def _merge(layers: dict[str, dict[str, Any]], data: Mapping[str, Any], *, source: str) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                section, values, f"unknown section in {source}; allowed: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(section, values, f"a JSON object of settings in {source}")
        layers.setdefault(section, {}).update(values)
