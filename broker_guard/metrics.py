"""Prometheus metrics (the ``broker-guard[metrics]`` extra: ``prometheus_client``).

Two collectors give the same metric families. ``StateCollector`` reads the
shared state, as ``broker-guard serve`` does for a fleet: the frozen symbols,
the halt, and each bot's heartbeat (its balance figures and its counters as of
its last beat). ``GuardCollector`` reads one guard in its own process, live,
for a bot that already runs a metrics server::

    from prometheus_client import REGISTRY
    from broker_guard.metrics import GuardCollector
    REGISTRY.register(GuardCollector(guard))

Per-bot series carry an ``account`` label: the guard's name (``guard.name``,
default its account), one series per bot. Symbols in
``broker_guard_price_failures_total`` are bounded per bot (``GuardCounters``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker_guard.config import GuardConfig
from broker_guard.errors import StoreError
from broker_guard.guard.freeze_manager import SymbolFreezeManager
from broker_guard.guard.heartbeat import read_heartbeats
from broker_guard.guarded import GuardedBroker, guard_of
from broker_guard.liquidation.health import fleet_health

Clock = Callable[[], float]


def families(
    frozen_count: int, halted: bool, bots: Mapping[str, Any], now: float
) -> Iterator[Metric]:
    """Every metric family from the state's figures and the bots' heartbeat records."""
    yield GaugeMetricFamily(
        "broker_guard_frozen_symbols", "Symbols frozen in the shared state", value=frozen_count
    )
    yield GaugeMetricFamily(
        "broker_guard_halted", "1 while trading is halted (entries refused)", value=int(halted)
    )
    records = {name: r for name, r in bots.items() if isinstance(r, dict)}
    yield from _balance_families(records, now)
    yield from _counter_families(records)


def _balance_families(records: Mapping[str, dict[str, Any]], now: float) -> Iterator[Metric]:
    seen = GaugeMetricFamily(
        "broker_guard_heartbeat_age_seconds",
        "Seconds since the bot's last heartbeat",
        labels=["account"],
    )
    age = GaugeMetricFamily(
        "broker_guard_balance_age_seconds",
        "Seconds since the bot's last successful balance call",
        labels=["account"],
    )
    errors = GaugeMetricFamily(
        "broker_guard_balance_consecutive_errors",
        "Balance attempts failed in a row",
        labels=["account"],
    )
    for name, record in records.items():
        seen_at = _number(record.get("seen_at"))
        if seen_at is not None:
            seen.add_metric([name], max(0.0, now - seen_at))
        balance = record.get("balance")
        if not isinstance(balance, dict):
            continue
        success = _number(balance.get("last_success_at"))
        if success is not None:
            age.add_metric([name], max(0.0, now - success))
        errors.add_metric([name], _number(balance.get("consecutive_errors")) or 0.0)
    yield from (seen, age, errors)


def _counter_families(records: Mapping[str, dict[str, Any]]) -> Iterator[Metric]:
    retries = CounterMetricFamily(
        "broker_guard_retries", "Balance attempts retried", labels=["account"]
    )
    fallbacks = CounterMetricFamily(
        "broker_guard_fallbacks",
        "Balance calls answered from the last known balance",
        labels=["account"],
    )
    refusals = CounterMetricFamily(
        "broker_guard_refusals",
        "Calls refused before the broker saw them, by reason",
        labels=["account", "reason"],
    )
    failures = CounterMetricFamily(
        "broker_guard_price_failures",
        "Price call failures by symbol (bounded) and kind",
        labels=["account", "symbol", "kind"],
    )
    liquidated = CounterMetricFamily(
        "broker_guard_liquidation_value_usd",
        "USD value of positions closed, by kind (dust, normalize)",
        labels=["account", "kind"],
    )
    for name, record in records.items():
        counters = record.get("counters")
        if not isinstance(counters, dict):
            continue
        retries.add_metric([name], _number(counters.get("retries")) or 0.0)
        fallbacks.add_metric([name], _number(counters.get("fallbacks")) or 0.0)
        for reason, count in _items(counters.get("refusals")):
            refusals.add_metric([name, reason], count)
        for kind, value in _items(counters.get("liquidated_usd")):
            liquidated.add_metric([name, kind], value)
        for entry in counters.get("price_failures") or ():
            if isinstance(entry, dict) and _number(entry.get("count")) is not None:
                labels = [name, str(entry.get("symbol")), str(entry.get("kind"))]
                failures.add_metric(labels, _number(entry.get("count")) or 0.0)
    yield from (retries, fallbacks, refusals, failures, liquidated)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _items(mapping: Any) -> Iterator[tuple[str, float]]:
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            number = _number(value)
            if number is not None:
                yield str(key), number


class StateCollector(Collector):
    """The fleet's metrics from the shared state (what ``broker-guard serve`` exports)."""

    def __init__(self, manager: SymbolFreezeManager, clock: Clock = time.time) -> None:
        self.manager, self.clock = manager, clock

    def collect(self) -> Iterator[Metric]:
        stats = self.manager.get_stats()
        bots = read_heartbeats(self.manager.store)
        return families(stats["frozen_count"], stats["halted"] is not None, bots, self.clock())


class GuardCollector(Collector):
    """One guard's metrics, live, in its own process (its heartbeat record as it is now)."""

    def __init__(self, guarded: object) -> None:
        self.guard: GuardedBroker = guard_of(guarded)

    def collect(self) -> Iterator[Metric]:
        ctx = self.guard.guard_context
        stats = ctx.freeze.get_stats()
        bots = {ctx.heartbeat.name: ctx.heartbeat.record()} if ctx.heartbeat is not None else {}
        return families(stats["frozen_count"], stats["halted"] is not None, bots, ctx.clock())


def guard_registry(guarded: object) -> CollectorRegistry:
    """A registry holding one guard's metrics, for ``generate_latest`` or a metrics server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(guarded))
    return registry


def make_server(
    manager: SymbolFreezeManager,
    config: GuardConfig,
    host: str = "127.0.0.1",
    port: int = 9464,
    clock: Clock = time.time,
) -> ThreadingHTTPServer:
    """An HTTP server with ``/metrics`` (Prometheus text) and ``/health`` (the fleet's health as
    JSON: 200 when ok, 503 on any alert); call ``serve_forever()`` on it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(manager, clock))
    lock = threading.Lock()  # one scrape at a time reads the state

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                with lock:
                    code, body, kind = self._answer(path)
            except StoreError as exc:  # the state cannot be read: never an OK, always an answer
                failed = {"ok": False, "alerts": [f"state store unreadable: {exc}"]}
                code, body, kind = 503, json.dumps(failed).encode(), "application/json"
            self._send(code, body, kind)

        def do_HEAD(self) -> None:
            self.do_GET()

        def _answer(self, path: str) -> tuple[int, bytes, str]:
            if path == "/metrics":
                return 200, generate_latest(registry), "text/plain; version=0.0.4"
            if path in ("/health", "/healthz"):
                health = fleet_health(manager, config, clock())
                body = json.dumps(health, default=str).encode()
                return (200 if health["ok"] else 503), body, "application/json"
            return 404, b"not found: /metrics or /health\n", "text/plain"

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not logged: a scrape every 15 s would bury the operator's log."""

    return ThreadingHTTPServer((host, port), Handler)
