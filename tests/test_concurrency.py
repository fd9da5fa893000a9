"""Several processes, each with several threads, on one data_dir or one Redis, with an operator
acting at the same time.

The final state must equal what a sequential model of the same operations
gives: every failure counted once, every freeze and manual unfreeze applied,
the operator's unfreezes and restrictions kept. Each process finishes within a
bounded time (no deadlock); a lock wait past its timeout is a clear error,
which the workers count and which must not happen here.
``BROKER_GUARD_FULL=1`` runs 4 processes x 4 threads x 120 operations.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from broker_guard import GuardConfig, GuardedBroker, RedisStore, Store, StoreLockTimeoutError
from broker_guard.config import FreezePolicy
from broker_guard.state.select import store_from_config
from broker_guard.symbol_freeze_manager import SymbolFreezeManager
from broker_guard.testing import PaperBroker

FULL = bool(os.environ.get("BROKER_GUARD_FULL"))
PROCESSES, THREADS, OPS = (4, 4, 120) if FULL else (3, 3, 24)
DELISTED = [f"D{k}-USD" for k in range(4)]
PREFROZEN = [f"P{k}-USD" for k in range(10)]
OPERATOR_UNFREEZES = PREFROZEN[:5]
OPERATOR_RESTRICTS = [f"R{k}-USD" for k in range(5)]


def open_store(where: dict[str, Any]) -> Store:
    """The store the ``guard`` settings ``where`` name (a data_dir, or a Redis URL and prefix), as a
    bot opens it."""
    return store_from_config(
        GuardConfig.load(env={}, guard={"lock_timeout_seconds": 20.0, **where})
    )


def worker_process(where: dict[str, Any], proc: int, results: Any) -> None:
    """One bot process: THREADS threads trading through one GuardedBroker on the shared state."""
    import logging

    logging.disable(logging.CRITICAL)
    paper = PaperBroker(prices={"BTC-USD": 50_000.0}, cash=1_000.0, failure_rate=0.0)
    for symbol in DELISTED:
        paper.delist(symbol)
    config = GuardConfig.load(
        env={},
        symbol_freeze={"failure_threshold": 10**9},
        balance={"base_delay": 0.0, "max_delay": 0.0, "persist_interval_seconds": 0.0},
        guard={"lock_timeout_seconds": 20.0, "refresh_interval_seconds": 0.0, **where},
    )
    guard = GuardedBroker(paper, config)  # its store from the config, as a bot's
    guard.get_account_balance()
    errors: list[str] = []

    def thread(t: int) -> None:
        try:
            for i in range(OPS):
                try:
                    guard.get_current_price(DELISTED[i % len(DELISTED)])
                except StoreLockTimeoutError as exc:
                    errors.append(f"lock timeout: {exc}")
                except Exception:
                    pass  # the delisted symbol's own error: recorded by the guard
                assert guard.get_current_price("BTC-USD") == 50_000.0
                if i % 6 == 0:
                    guard.freeze_manager.freeze(f"W{proc}x{t}x{i}-USD", "worker")
                if i % 12 == 0 and i:
                    guard.freeze_manager.unfreeze_symbol(f"W{proc}x{t}x{i - 6}-USD", "worker")
                if i % 8 == 0:
                    paper.fail_next("get_account_balance", 5)
                    # served from the last known balance
                    assert guard.get_account_balance() == 1_000.0
        except Exception as exc:  # reported to the parent, which fails the test
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    results.put((proc, errors))


def operator_process(where: dict[str, Any], results: Any) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    manager = SymbolFreezeManager(FreezePolicy(), store=open_store(where))
    for unfreeze, restrict in zip(OPERATOR_UNFREEZES, OPERATOR_RESTRICTS, strict=True):
        manager.unfreeze_symbol(unfreeze, "operator")
        manager.restrict(restrict)
    results.put(("operator", []))


def sequential_model() -> dict[str, Any]:
    """The same operations, one after another."""
    failures = {s.replace("-", "/"): 0 for s in DELISTED}
    frozen = {s.replace("-", "/") for s in PREFROZEN[5:]}
    for proc in range(PROCESSES):
        for t in range(THREADS):
            for i in range(OPS):
                failures[DELISTED[i % len(DELISTED)].replace("-", "/")] += 1
                if i % 6 == 0:
                    frozen.add(f"W{proc}X{t}X{i}/USD")
                if i % 12 == 0 and i:
                    frozen.discard(f"W{proc}X{t}X{i - 6}/USD")
    return {
        "failures": failures,
        "frozen": frozen,
        "restricted": {s.replace("-", "/") for s in OPERATOR_RESTRICTS},
    }


@pytest.fixture(params=["file", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``guard`` settings that point every process at the same state."""
    if request.param == "file":
        return {"data_dir": str(tmp_path)}
    return {
        "store_url": request.getfixturevalue("redis_server").url,
        "store_prefix": request.getfixturevalue("redis_prefix"),
    }


def test_processes_threads_and_an_operator_lose_no_update(shared: dict[str, Any]) -> None:
    setup = open_store(shared)
    manager = SymbolFreezeManager(FreezePolicy(), store=setup)
    for symbol in PREFROZEN:
        manager.freeze(symbol, "before the run")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker_process, args=(shared, p, results)) for p in range(PROCESSES)
    ]
    procs.append(ctx.Process(target=operator_process, args=(shared, results)))
    for p in procs:
        p.start()
    reports = [results.get(timeout=300) for _ in procs]  # bounded: a deadlock fails here, not hangs
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert all(errors == [] for _, errors in reports), reports

    model = sequential_model()
    reader = open_store(shared)
    state = reader.read("symbol_freeze")
    counts = {s: e["count"] for s, e in state.get("failures", {}).items() if s in model["failures"]}
    # every failure from every thread of every process, counted once
    assert counts == model["failures"]
    # freezes, worker unfreezes and the operator's unfreezes
    assert set(state["frozen"]) == model["frozen"]
    restricted = set(SymbolFreezeManager(FreezePolicy(), store=reader).get_restricted_symbols())
    assert model["restricted"] <= restricted
    for store in (setup, reader):
        if isinstance(store, RedisStore):
            store.close()


EXITING_WRITER = """
import sys
from broker_guard import JsonFileStore
from broker_guard.symbol_freeze_manager import SymbolFreezeManager
store = JsonFileStore(sys.argv[1], lock_timeout=30.0)
manager = SymbolFreezeManager(store=store)
for _ in range(3):
    manager.record_price_fetch_failure("OLD-USD", "symbol not found")  # lock busy: kept in memory
print("kept", flush=True)
sys.stdin.readline()  # the parent lets go of the lock, then the process ends normally
"""


def test_changes_kept_in_memory_are_written_when_the_process_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    import filelock

    from broker_guard import JsonFileStore

    lock = filelock.FileLock(tmp_path / "symbol_freeze.json.lock")
    with lock:
        child = subprocess.Popen(
            [sys.executable, "-c", EXITING_WRITER, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "kept"
    assert child.communicate(input="\n", timeout=60)[1] is None
    assert child.returncode == 0
    state = JsonFileStore(tmp_path).read("symbol_freeze")
    assert state["failures"]["OLD/USD"]["count"] == 3 and "OLD/USD" in state["frozen"]
