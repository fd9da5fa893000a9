"""Soak: the paper broker with a 20% fault rate under many threads for minutes; memory, file handles
and state stay flat.

Opt-in: ``BROKER_GUARD_SOAK=<seconds> python -m pytest tests/test_soak.py -s`` (not in CI's
default run).
Prints the figures docs/RELIABILITY.md quotes.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

from broker_guard import GuardConfig, GuardedBroker, JsonFileStore
from broker_guard.testing import PaperBroker

SECONDS = float(os.environ.get("BROKER_GUARD_SOAK", "0"))
THREADS = 16


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not SECONDS, reason="opt-in: set BROKER_GUARD_SOAK=<seconds>")
def test_soak_under_faults_keeps_memory_handles_and_state_flat(tmp_path: Path) -> None:
    import logging

    logging.getLogger("broker_guard").setLevel(logging.CRITICAL)
    symbols = [f"S{i}-USD" for i in range(50)]
    paper = PaperBroker(prices=dict.fromkeys(symbols, 10.0), cash=1_000.0, failure_rate=0.2, seed=7)
    for symbol in symbols[:5]:
        paper.delist(symbol)
    config = GuardConfig.load(
        env={},
        data_dir=str(tmp_path),
        balance={"base_delay": 0.0, "max_delay": 0.0},
        guard={"refresh_interval_seconds": 0.5},
    )
    guard = GuardedBroker(paper, config, store=JsonFileStore(tmp_path))
    calls = [0] * THREADS
    stop = threading.Event()

    def trade(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                guard.get_current_price(symbols[(i * 7 + t) % len(symbols)])
            except Exception:
                pass  # the injected faults and delisted symbols: recorded by the guard
            if i % 10 == 0:
                try:
                    guard.get_account_balance()
                except Exception:
                    pass  # no last known balance yet
            if i % 500 == 0:
                # an operator keeps unfreezing
                guard.freeze_manager.unfreeze_symbol(f"S{i % 5}-USD", "soak")
            calls[t] = i

    warmup = min(10.0, SECONDS / 6)
    threads = [threading.Thread(target=trade, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    # a soak runs in real time by design; it is opt-in and never in the default run
    time.sleep(warmup)
    gc.collect()
    rss_before, fds_before, state_before = (
        rss_bytes(),
        open_fds(),
        (tmp_path / "symbol_freeze.json").stat().st_size,
    )
    time.sleep(SECONDS - warmup)
    stop.set()
    for th in threads:
        th.join(30)
    gc.collect()
    rss_after, fds_after, state_after = (
        rss_bytes(),
        open_fds(),
        (tmp_path / "symbol_freeze.json").stat().st_size,
    )
    print(
        f"\nsoak {SECONDS:.0f}s, {THREADS} threads, {sum(calls):,} loop iterations; "
        f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; fds {fds_before} -> "
        f"{fds_after}; "
        f"freeze state {state_before:,} -> {state_after:,} bytes; health ok={guard.health()['ok']}"
    )
    assert fds_after <= fds_before + 2
    assert rss_after - rss_before < 32 * 2**20
    # bounded by the symbols, not by the number of calls
    assert state_after < 4 * max(state_before, 4096)
