"""The process the crash test kills: state changes on a data_dir, each announced before and
acknowledged after.

``python tests/crash_writer.py DATA_DIR FIRST_SEQ`` prints ``begin <op> <arg>``
before each change and ``ack <op> <arg>`` once the call returned, flushing
each line, until it is killed. The test kills it with SIGKILL and checks that
every acknowledged change survived.
"""

from __future__ import annotations

import logging
import random
import sys

from broker_guard import JsonFileStore
from broker_guard.config import BalancePolicy, FreezePolicy
from broker_guard.enhanced_balance_fetcher import EnhancedBalanceFetcher
from broker_guard.symbol_freeze_manager import SymbolFreezeManager
from broker_guard.testing import FakeClock

BALANCE_KEY = ("crash-account", "get_account_balance")


def main(data_dir: str, first: int) -> None:
    # the test shows these if a check fails
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    clock = FakeClock(start=1_800_000_000.0 + first)  # fetched_at grows from round to round
    store = JsonFileStore(data_dir, lock_timeout=30.0, clock=clock)
    freeze = SymbolFreezeManager(
        FreezePolicy(failure_threshold=10**9), store=store, clock=clock, refresh_interval=0.0
    )
    balances = EnhancedBalanceFetcher(
        BalancePolicy(persist_interval_seconds=0.0), store=store, clock=clock
    )
    rng = random.Random(first)
    seq = first
    while True:
        seq += 1
        clock.advance(1.0)
        op = rng.choice(
            ("freeze", "freeze", "unfreeze", "fail", "fail", "audit", "audit", "balance")
        )
        frozen = sorted(freeze.get_frozen_symbols())
        if op == "unfreeze" and not frozen:
            op = "freeze"
        arg = (
            rng.choice(frozen)
            if op == "unfreeze"
            else f"K{seq}-USD"
            if op == "freeze"
            else str(seq)
        )
        print(f"begin {op} {arg}", flush=True)
        if op == "freeze":
            freeze.freeze(arg, "crash test")
        elif op == "unfreeze":
            freeze.unfreeze_symbol(arg, "crash test")
        elif op == "fail":
            freeze.record_price_fetch_failure("F-USD", "symbol not found")
        elif op == "audit":
            store.append("audit", {"seq": seq})
        else:
            balances.remember(BALANCE_KEY, float(seq))
        print(f"ack {op} {arg}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
