"""Planted secrets never reach logs, tracebacks, events, state files, the audit log or results.

A faulty run: the broker's credentials appear in exception messages, URLs,
headers and its repr, through balance retries and fallback, price failures and
a freeze, a dust run whose close fails, a normalization whose account fails,
and a maintenance pass that crashes with a traceback. Every output is grepped.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any, ClassVar

import pytest

from broker_guard import GuardConfig, GuardedBroker, GuardEvent, JsonFileStore, SymbolFrozenError
from broker_guard.testing import FakeClock, PaperBroker
from broker_guard.user_account_normalization import run_normalization_pass

API_KEY = "AKIA0PLANTEDKEY7777"
SECRET = "s3cr3t-PLANTED-0000-ffff"
PASSPHRASE = "pass-PLANTED-phrase"
SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.PLANTED.token"
PLANTED = (API_KEY, SECRET, PASSPHRASE, SIGNATURE, TOKEN)


class LeakyBroker(PaperBroker):
    """A broker that puts its credentials everywhere a real client might."""

    def __init__(self) -> None:
        super().__init__(
            prices={"BTC-USD": 50_000.0, "DOGE-USD": 0.1}, positions={"DOGE-USD": 3.0}, cash=500.0
        )
        self.apiKey, self.secret, self.password = API_KEY, SECRET, PASSPHRASE
        self.delist("OLD-USD")

    def __repr__(self) -> str:
        return f"LeakyBroker(apiKey={API_KEY!r}, secret={SECRET!r})"

    def get_current_price(self, symbol: str) -> float:
        if symbol == "OLD-USD":
            raise ValueError(
                f"symbol not found: GET "
                f"https://api.example.com/ticker?symbol=OLD&signature={SIGNATURE}&apiKey={API_KEY}"
            )
        return super().get_current_price(symbol)


def leaky(message: str) -> Exception:
    return ConnectionError(
        f"{message} (key {API_KEY}, secret {SECRET}, Authorization: Bearer {TOKEN}, "
        f"passphrase={PASSPHRASE})"
    )


def test_no_planted_secret_reaches_any_output(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[GuardEvent] = []
    broker = LeakyBroker()
    config = GuardConfig.load(
        env={}, data_dir=str(tmp_path), dust={"schedule": "hourly"}, balance={"jitter": False}
    )
    guard: Any = GuardedBroker(
        broker,
        config,
        store=JsonFileStore(tmp_path, clock=clock),
        clock=clock,
        sleep=clock.sleep,
        on_event=events.append,
    )

    guard.get_account_balance()
    broker.fail_next("get_account_balance", 10, leaky("balance endpoint down"))
    guard.get_account_balance()  # retries, then the fallback
    for _ in range(3):
        with pytest.raises(ValueError):
            guard.get_current_price("OLD-USD")  # counted, then frozen, with the URL in the error
    broker.fail_next("place_market_order", 1, leaky("order rejected"))
    dust = guard.dust(dry_run=False)
    assert dust["failed"] == 1

    class Broken(PaperBroker):
        def get_positions(self) -> Any:
            raise leaky("positions endpoint down")

    broken = GuardedBroker(
        Broken(), config, store=JsonFileStore(tmp_path, clock=clock), clock=clock, sleep=clock.sleep
    )
    normalized = run_normalization_pass({"main": guard, "broken": broken}, dry_run=True)
    assert "broken" in normalized["account_errors"]

    broker.fail_next("get_positions", 1, leaky("maintenance read failed"))
    maintenance = guard.start_maintenance(poll=3600)
    guard.stop_maintenance()
    clock.advance(3601)
    maintenance.tick()  # the scheduled dust pass fails with a traceback, logged

    outputs = {
        "logs": caplog.text
        + "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records),
        "events": repr(events),
        "results": repr(dust.as_dict() if hasattr(dust, "as_dict") else dict(dust))
        + json.dumps(normalized, default=str),
        "repr": repr(guard),
        "health": json.dumps(guard.health(), default=str),
    }
    for path in tmp_path.iterdir():
        if path.is_file():
            outputs[path.name] = path.read_text(errors="replace")
            if path.suffix in (".json", ".jsonl"):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path.name} is not private"
    assert any(name.endswith(".jsonl") for name in outputs), "the audit log was written"
    assert "Traceback" in outputs["logs"], "the maintenance failure was logged with its traceback"
    for name, text in outputs.items():
        for secret in PLANTED:
            assert secret not in text, f"{secret!r} leaked into {name}"


# -- symbols and currencies named like secrets (issue 13) -----------------------------------------

NAMED_LIKE_SECRETS = ("SIG", "TOKEN", "AUTH", "SECRET", "PWD")


class DictBalanceBroker(PaperBroker):
    """Answers its balance as a ccxt-style dict, holding currencies named like secrets."""

    def get_account_balance(self) -> Any:  # type: ignore[override]
        self._enter("get_account_balance")
        return {name: {"free": 1.5, "used": 0.0, "total": 1.5} for name in NAMED_LIKE_SECRETS}


def _store(kind: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest) -> Any:
    if kind == "files":
        return JsonFileStore(tmp_path, clock=clock)
    from broker_guard import RedisStore

    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    store = RedisStore(server.url, prefix=prefix, clock=clock)
    request.addfinalizer(store.close)
    return store


@pytest.mark.parametrize("kind", ["files", "redis"])
def test_symbols_named_like_secrets_freeze_durably(
    kind: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    broker = PaperBroker(prices={s: 1.0 for s in NAMED_LIKE_SECRETS}, cash=100.0)
    for symbol in NAMED_LIKE_SECRETS:
        broker.delist(symbol)
    config = GuardConfig.load(env={}, data_dir=str(tmp_path))
    guard: Any = GuardedBroker(
        broker, config, store=_store(kind, tmp_path, clock, request), clock=clock
    )
    for symbol in NAMED_LIKE_SECRETS:
        for _ in range(3):
            with pytest.raises(Exception, match="not available"):
                guard.get_current_price(symbol)
    # a restart (another guard on the same store) sees every freeze, and refuses entries
    again: Any = GuardedBroker(
        PaperBroker(prices={s: 1.0 for s in NAMED_LIKE_SECRETS}, cash=100.0),
        config,
        store=_store(kind, tmp_path, clock, request),
        clock=clock,
    )
    frozen = again.freeze_manager.get_frozen_symbols()
    assert sorted(frozen) == sorted(NAMED_LIKE_SECRETS)
    assert all(info.consecutive_failures == 3 for info in frozen.values())
    for symbol in NAMED_LIKE_SECRETS:
        with pytest.raises(SymbolFrozenError):
            again.place_market_order(symbol, "buy", 1.0)
    assert not list(tmp_path.glob("*corrupt*")), "nothing was damaged"
    assert again.health()["persistence"]["recovered"] == []


def test_balances_in_currencies_named_like_secrets_survive_a_restart(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = GuardConfig.load(env={}, data_dir=str(tmp_path), balance={"jitter": False})
    guard: Any = GuardedBroker(
        DictBalanceBroker(), config, store=JsonFileStore(tmp_path, clock=clock), clock=clock
    )
    balance = guard.get_account_balance()
    assert set(balance) == set(NAMED_LIKE_SECRETS)
    # restart during an outage: the saved balance is the fallback
    down = DictBalanceBroker()
    down.fail_next("get_account_balance", 10, ConnectionError("down"))
    again: Any = GuardedBroker(
        down, config, store=JsonFileStore(tmp_path, clock=clock), clock=clock, sleep=clock.sleep
    )
    assert again.get_account_balance() == balance
    assert not list(tmp_path.glob("*corrupt*"))


class SdkBroker(PaperBroker):
    """Credentials under other SDKs' attribute names, one of them 7 characters long."""

    CREDENTIALS: ClassVar[dict[str, str]] = {
        "secret_key": "sdk-secret-key-1111",
        "API_SECRET": "sdk-API-SECRET-2222",
        "access_token": "sdk-access-token-3333",
        "private_key": "sdk-private-key-4444",
        "api_passphrase": "sdk-api-passphrase-5555",
        "passphrase": "pass7ch",  # 7 characters: still a secret
        "_api_key": "sdk-underscore-key-6666",
    }

    def __init__(self) -> None:
        super().__init__(prices={"BTC-USD": 50_000.0, "DOGE-USD": 0.1}, positions={"DOGE-USD": 3.0})
        for name, value in self.CREDENTIALS.items():
            setattr(self, name, value)
        self.delist("OLD-USD")

    def get_current_price(self, symbol: str) -> float:
        if symbol == "OLD-USD":
            raise ValueError("symbol not found; sent " + " ".join(self.CREDENTIALS.values()))
        return super().get_current_price(symbol)


def test_sdk_credential_names_and_short_secrets_never_leak(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = SdkBroker()
    config = GuardConfig.load(env={}, data_dir=str(tmp_path))
    guard: Any = GuardedBroker(
        broker, config, store=JsonFileStore(tmp_path, clock=clock), clock=clock, sleep=clock.sleep
    )
    for _ in range(3):
        with pytest.raises(ValueError):
            guard.get_current_price("OLD-USD")
    broker.fail_next("place_market_order", 1, RuntimeError("rejected: " + broker.passphrase))
    guard.dust(dry_run=False)
    outputs = {
        "logs": caplog.text,
        "health": json.dumps(guard.health(), default=str),
        "stats": json.dumps(guard.freeze_manager.get_stats(), default=str),
    }
    for path in tmp_path.iterdir():
        if path.is_file():
            outputs[path.name] = path.read_text(errors="replace")
    for name, text in outputs.items():
        for secret in SdkBroker.CREDENTIALS.values():
            assert secret not in text, f"{secret!r} leaked into {name}"
    assert guard.freeze_manager.is_frozen("OLD-USD")


def test_secrets_named_by_the_user_are_masked_too(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = PaperBroker(prices={"BTC-USD": 1.0})
    broker.fail_next("get_current_price", 1, ValueError("symbol not found: vendor-pin-42"))
    guard: Any = GuardedBroker(
        broker, GuardConfig.load(env={}), secrets=["vendor-pin-42"], clock=clock
    )
    with pytest.raises(ValueError):
        guard.get_current_price("BTC-USD")
    assert "vendor-pin-42" not in caplog.text
    assert "vendor-pin-42" not in json.dumps(guard.freeze_manager.get_stats())
    with pytest.raises(TypeError, match="list of strings"):
        GuardedBroker(PaperBroker(), GuardConfig.load(env={}), secrets="vendor-pin-42")
