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
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker, GuardEvent, JsonFileStore
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
