"""Crash safety: a writer killed with SIGKILL at random moments loses nothing it acknowledged.

Default run: 20 kills. ``BROKER_GUARD_FULL=1``: 200 kills (the figure in docs/RELIABILITY.md).
The writer is killed right after a random number of acknowledged changes, so
the kill lands anywhere in the next change: inside the lock, between the temp
file and the rename, mid-append.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from broker_guard import JsonFileStore
from broker_guard.config import FreezePolicy
from broker_guard.symbol_freeze_manager import SymbolFreezeManager

KILLS = 200 if os.environ.get("BROKER_GUARD_FULL") else 20
WRITER = Path(__file__).with_name("crash_writer.py")
BALANCE_RECORD = "crash-account|get_account_balance"


class Model:
    """What the writer acknowledged, across all its lives."""

    def __init__(self) -> None:
        self.frozen: set[str] = set()
        self.failures = 0
        self.audit: set[int] = set()
        self.balance: float | None = None

    def apply(self, op: str, arg: str) -> None:
        if op == "freeze":
            self.frozen.add(arg.replace("-", "/"))
        elif op == "unfreeze":
            self.frozen.discard(arg.replace("-", "/"))
        elif op == "fail":
            self.failures += 1
        elif op == "audit":
            self.audit.add(int(arg))
        elif op == "balance":
            self.balance = float(arg)


def check_files_parse(data_dir: Path) -> None:
    for path in data_dir.iterdir():
        if path.suffix in (".json", ".bak") and ".tmp" not in path.name:
            with path.open() as f:
                assert isinstance(json.load(f), dict), (
                    f"{path.name} is not a JSON object after a kill"
                )
        assert ".corrupt-" not in path.name, (
            f"a state file was found corrupt after a kill: {path.name}"
        )


def test_sigkill_at_random_moments_loses_no_acknowledged_change(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    model = Model()
    for life in range(KILLS):
        first = (life + 1) * 1_000_000
        errors_file = tmp_path.parent / f"writer-{life}.err"
        with errors_file.open("w") as errors_out:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(tmp_path), str(first)],
                stdout=subprocess.PIPE,
                stderr=errors_out,
                text=True,
            )
        assert proc.stdout is not None
        lines: list[str] = []
        target = rng.randint(1, 25)
        acks = 0
        while acks < target:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            acks += line.startswith("ack ")
        proc.send_signal(signal.SIGKILL)
        # through the same buffer readline used: communicate() would skip it
        lines += proc.stdout.read().splitlines()
        proc.stdout.close()
        assert proc.wait(timeout=30) == -signal.SIGKILL, f"life {life}: the writer died on its own"
        errors = errors_file.read_text()
        in_flight: tuple[str, str] | None = None
        for line in lines:
            kind, op, arg = line.split()
            if kind == "begin":
                in_flight = (op, arg)
            else:
                model.apply(op, arg)
                in_flight = None

        check_files_parse(tmp_path)
        store = JsonFileStore(tmp_path)
        frozen = set(SymbolFreezeManager(FreezePolicy(), store=store).get_stats()["frozen_symbols"])
        frozen = {s.replace("-", "/") for s in frozen}
        failures = int(
            store.read("symbol_freeze").get("failures", {}).get("F/USD", {}).get("count", 0)
        )
        audit = {r["seq"] for r in store.read_lines("audit")}
        balance = store.read("balances").get("balances", {}).get(BALANCE_RECORD, {}).get("value")

        op, arg = in_flight or ("", "")
        # every acknowledged change is there; only the change in flight may or may not be
        expected_frozen = set(model.frozen)
        maybe = {arg.replace("-", "/")} if op in ("freeze", "unfreeze") else set()
        assert expected_frozen - maybe <= frozen <= expected_frozen | maybe, (
            f"life {life}: frozen set lost an acknowledged change; writer said: {errors}"
        )
        assert model.failures <= failures <= model.failures + (op == "fail"), (
            f"life {life}: failure count {failures} vs {model.failures}"
        )
        assert model.audit <= audit <= model.audit | ({int(arg)} if op == "audit" else set()), (
            f"life {life}: audit lines lost"
        )
        assert balance in ({model.balance} | ({float(arg)} if op == "balance" else set())), (
            f"life {life}: balance {balance}"
        )
        # the change in flight, whichever way it went, is now the truth the next life starts from
        model.frozen, model.failures, model.audit = frozen, failures, audit
        model.balance = balance
