"""Metrics (the broker-guard[metrics] extra): `broker-guard serve` on a loopback port, read with
prometheus_client's own text parser, and one guard's registry in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker
from broker_guard.cli import main
from broker_guard.testing import FakeClock, PaperBroker

prometheus = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from broker_guard.metrics import guard_registry  # noqa: E402


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), parsed the way Prometheus's client parses it."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def busy_bot(data_dir: str | None, clock: FakeClock, **store: Any) -> Any:
    """A bot that has seen everything the metrics count: a retry and a fallback, a frozen symbol,
    a refusal, and a dust position closed."""
    broker = PaperBroker(
        prices={"BTC-USD": 50_000.0, "DOGE-USD": 0.1, "LUNA-USD": 1.0},
        positions={"DOGE-USD": 5.0, "BTC-USD": 0.01},
        cash=1000.0,
    )
    config = GuardConfig.load(env={}, data_dir=data_dir or "unused", guard={"name": "alpha"})
    guard = GuardedBroker(broker, config, clock=clock, sleep=clock.sleep, **store)
    guard.get_account_balance()
    broker.fail_next("get_account_balance", 3, "network")
    guard.get_account_balance()  # 2 retries, then the fallback
    broker.delist("LUNA-USD")
    for _ in range(3):
        with pytest.raises(Exception, match="Price not available"):
            guard.get_current_price("LUNA-USD")
    with pytest.raises(Exception, match="restricted"):
        guard.place_market_order("AUT-USD", "buy", 1.0)
    assert guard.dust(dry_run=False)["closed"] == 1
    clock.advance(31)
    guard.get_account_balance()  # recovered; the heartbeat carries all of the above
    return guard


def expected_bot_samples(at: dict[Any, float]) -> None:
    bot = (("account", "alpha"),)
    assert at[("broker_guard_frozen_symbols", ())] == 1
    assert at[("broker_guard_halted", ())] == 0
    assert at[("broker_guard_retries_total", bot)] == 2
    assert at[("broker_guard_fallbacks_total", bot)] == 1
    refused = (("account", "alpha"), ("reason", "restricted"))
    assert at[("broker_guard_refusals_total", refused)] == 1
    failures = (("account", "alpha"), ("kind", "bad_symbol"), ("symbol", "LUNA-USD"))
    assert at[("broker_guard_price_failures_total", failures)] == 3
    dust = (("account", "alpha"), ("kind", "dust"))
    assert at[("broker_guard_liquidation_value_usd_total", dust)] == pytest.approx(0.5)
    assert at[("broker_guard_balance_consecutive_errors", bot)] == 0
    assert 0 <= at[("broker_guard_balance_age_seconds", bot)] < 60


def test_one_guards_registry_in_its_own_process() -> None:
    from broker_guard import MemoryStore

    clock = FakeClock()
    guard = busy_bot(None, clock, store=MemoryStore())
    text = prometheus.generate_latest(guard_registry(guard)).decode()
    expected_bot_samples(samples(text))


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read()


def test_serve_exports_metrics_and_health_on_a_loopback_port(tmp_path: Path) -> None:
    d = str(tmp_path)
    busy_bot(d, FakeClock(time.time()))
    server = subprocess.Popen(
        [sys.executable, "-m", "broker_guard", "serve", "--port", "0", "--data-dir", d],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line + server.stderr.read()
        base = line.split()[1].removesuffix("/metrics")
        code, body = get(base + "/metrics")
        assert code == 200
        expected_bot_samples(samples(body.decode()))
        code, body = get(base + "/health")
        health = json.loads(body)
        assert code == 200 and health["ok"] is True, health["alerts"]
        assert main(["halt", "--reason", "maintenance", "--data-dir", d]) == 0
        code, body = get(base + "/health")
        assert code == 503 and "halted" in json.loads(body)["alerts"][0]
        assert samples(get(base + "/metrics")[1].decode())[("broker_guard_halted", ())] == 1
        assert get(base + "/nothing")[0] == 404
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_without_prometheus_client_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "broker_guard.metrics", None)
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    assert "pip install 'broker-guard[metrics]'" in capsys.readouterr().err


def test_serve_on_a_taken_port_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--data-dir", str(tmp_path)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_serve_answers_503_when_the_state_cannot_be_read_and_answers_head(
    tmp_path: Path,
) -> None:
    """Review finding: with the store unreachable, /health and /metrics closed the connection
    with no answer (a traceback on stderr each time); HEAD /health was 501."""
    import threading

    from broker_guard import JsonFileStore, StoreError
    from broker_guard.metrics import make_server
    from broker_guard.symbol_freeze_manager import SymbolFreezeManager

    store = JsonFileStore(tmp_path)
    manager = SymbolFreezeManager(store=store, refresh_interval=0.0)
    server = make_server(manager, GuardConfig.load(env={}), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        head = urllib.request.Request(base + "/health", method="HEAD")
        try:
            urllib.request.urlopen(head, timeout=10)
        except urllib.error.HTTPError as answer:
            assert answer.code == 503  # no bot yet: an alert, and HEAD is answered

        def unreadable(*args: Any, **kwargs: Any) -> Any:
            raise StoreError("state store unreachable")

        store.read = unreadable  # type: ignore[method-assign]
        store.load = unreadable  # type: ignore[method-assign]
        store.changes = unreadable  # type: ignore[method-assign]
        for path in ("/health", "/metrics"):
            code, body = get(base + path)
            assert code == 503 and json.loads(body)["ok"] is False
    finally:
        server.shutdown()
        server.server_close()
