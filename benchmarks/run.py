"""Benchmarks: the guard's cost as ratios against baselines measured in the same run.

python benchmarks/run.py            # full run (a few minutes), prints the tables for
docs/PERFORMANCE.md
python benchmarks/run.py --smoke    # seconds: checks every benchmark runs, not how fast
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import backoff
import wrapt

from broker_guard import GuardConfig, GuardedBroker, JsonFileStore, MemoryStore, RedisStore, Store
from broker_guard.config import FreezePolicy
from broker_guard.core import freeze as freeze_rules
from broker_guard.state.select import store_from_config
from broker_guard.symbol_freeze_manager import SymbolFreezeManager
from broker_guard.testing import FakeClock, PaperBroker


def open_store(where: dict[str, Any]) -> Store:
    """The store the ``guard`` settings ``where`` name (a data_dir, or a Redis URL and prefix), as a
    bot opens it."""
    return store_from_config(GuardConfig.load(env={}, guard=where))


def new_data_dir() -> dict[str, Any]:
    return {"data_dir": tempfile.mkdtemp()}


def close_store(store: Store) -> None:
    if isinstance(store, RedisStore):
        store.close()


def per_call(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Best-of-``repeat`` seconds per call (the minimum is the least noisy estimate)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def guard_for(broker: Any, **sections: Any) -> Any:
    clock = FakeClock()
    return GuardedBroker(
        broker,
        GuardConfig.load(env={}, **sections),
        store=MemoryStore(),
        clock=clock,
        sleep=clock.sleep,
    )


def success_path(number: int, repeat: int) -> list[tuple[str, float, float]]:
    broker = PaperBroker(prices={"BTC-USD": 50_000.0})
    guard = guard_for(broker)
    flaky = guard_for(broker)  # another symbol has a failure count: every call must stay fast
    with contextlib.suppress(Exception):
        flaky.get_current_price("ZZZ-USD")
    proxy = wrapt.ObjectProxy(broker)
    price = broker.get_current_price
    balance = broker.get_account_balance
    with_backoff = backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(price)
    with_backoff_balance = backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(balance)
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("raw get_current_price", lambda: price("BTC-USD")),
        ("wrapt.ObjectProxy passthrough", lambda: proxy.get_current_price("BTC-USD")),
        ("backoff.on_exception", lambda: with_backoff("BTC-USD")),
    ]
    try:
        import tenacity

        retried = tenacity.retry(stop=tenacity.stop_after_attempt(3))(price)
        rows.append(("tenacity.retry", lambda: retried("BTC-USD")))
    except ImportError:
        pass
    try:
        import pybreaker

        breaker = pybreaker.CircuitBreaker()
        rows.append(("pybreaker.CircuitBreaker", lambda: breaker.call(price, "BTC-USD")))
    except ImportError:
        pass
    rows += [
        ("GuardedBroker.get_current_price", lambda: guard.get_current_price("BTC-USD")),
        (
            "GuardedBroker.get_current_price, another symbol failing",
            lambda: flaky.get_current_price("BTC-USD"),
        ),
        ("raw get_account_balance", lambda: balance()),
        ("backoff.on_exception (balance)", lambda: with_backoff_balance()),
        ("GuardedBroker.get_account_balance", lambda: guard.get_account_balance()),
        ("raw unguarded attribute (min_trade_usd)", lambda: broker.min_trade_usd),
        ("GuardedBroker unguarded attribute", lambda: guard.min_trade_usd),
    ]
    timings = {name: per_call(fn, number, repeat) for name, fn in rows}
    base_price = timings["raw get_current_price"]
    base_balance = timings["raw get_account_balance"]
    base_attr = timings["raw unguarded attribute (min_trade_usd)"]
    out = []
    for name, seconds in timings.items():
        base = (
            base_balance if "balance" in name else base_attr if "attribute" in name else base_price
        )
        out.append((name, seconds, seconds / base))
    return out


class OrderSink:
    """A broker whose order call costs almost nothing, so the gate's own cost shows."""

    def get_positions(self) -> list[dict[str, Any]]:
        return [{"symbol": "ETH-USD", "quantity": 1.0}]

    def place_order(self, symbol: str, side: str, quantity: float) -> dict[str, Any]:
        return {"status": "filled"}


def order_path(number: int, repeat: int) -> list[tuple[str, float, float]]:
    sink = OrderSink()
    guard = guard_for(sink)
    guard.freeze_manager.freeze("ETH-USD", "benchmark")  # frozen: its sells read the holding
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("raw place_order", lambda: sink.place_order("BTC-USD", "buy", 1.0)),
        (
            "GuardedBroker.place_order (trusted symbol)",
            lambda: guard.place_order("BTC-USD", "buy", 1.0),
        ),
        (
            "GuardedBroker.place_order (exit on a frozen symbol: reads the holding)",
            lambda: guard.place_order("ETH-USD", "sell", 0.5),
        ),
    ]
    timings = {name: per_call(fn, number, repeat) for name, fn in rows}
    base = timings["raw place_order"]
    return [(name, seconds, seconds / base) for name, seconds in timings.items()]


def async_path(number: int) -> list[tuple[str, float, float]]:
    class AsyncBroker:
        async def get_current_price(self, symbol: str) -> float:
            return 1.0

    broker = AsyncBroker()
    guard = guard_for(broker)

    async def loop(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        for _ in range(number):
            await fn()
        return (time.perf_counter() - start) / number

    raw = asyncio.run(loop(lambda: broker.get_current_price("BTC-USD")))
    guarded = asyncio.run(loop(lambda: guard.get_current_price("BTC-USD")))
    return [
        ("async raw get_current_price", raw, 1.0),
        ("async GuardedBroker.get_current_price", guarded, guarded / raw),
    ]


def failure_path(number: int) -> list[tuple[str, float, float]]:
    broker = PaperBroker(prices={"BTC-USD": 1.0})
    broker.delist("BAD-USD")
    guard = guard_for(broker, freeze={"failure_threshold": 10**9})
    raw_fail = per_call(lambda: _swallow(broker.get_current_price, "BAD-USD"), number, 3)
    recorded = per_call(lambda: _swallow(guard.get_current_price, "BAD-USD"), number, 3)
    guard.freeze_manager.freeze("FRZ-USD")
    refused = per_call(lambda: _swallow(guard.get_current_price, "FRZ-USD"), number, 3)
    down = PaperBroker(cash=5.0)
    fallback_guard = guard_for(down, balance={"base_delay": 0.0, "max_delay": 0.0})
    fallback_guard.get_account_balance()
    down.failure_rate = 1.0

    served = per_call(fallback_guard.get_account_balance, max(1, number // 10), 3)
    return [
        ("raw failing price call", raw_fail, 1.0),
        ("guarded failing price call (failure recorded)", recorded, recorded / raw_fail),
        ("guarded call on a frozen symbol (refused)", refused, refused / raw_fail),
        ("fallback balance served (3 attempts, zero delays)", served, served / raw_fail),
    ]


def _swallow(fn: Callable[[str], Any], arg: str) -> None:
    try:
        fn(arg)
    except Exception:
        return


def persistence(
    count: int, where: Callable[[], dict[str, Any]], what: str
) -> list[tuple[str, float, float]]:
    store = open_store(where())
    manager = SymbolFreezeManager(FreezePolicy(), store=store)
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        manager.freeze(f"S{i}-USD")
        latencies.append(time.perf_counter() - start)
    close_store(store)
    p50 = statistics.median(latencies)
    p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))]
    return [
        (f"freeze reaching {what} p50", p50, 1.0),
        (f"freeze reaching {what} p99", p99, p99 / p50),
    ]


def _record_failures(where: dict[str, Any], worker: int, count: int, start: Any) -> None:
    """One process: ``count`` failure records on shared state (never reaching the freeze
    threshold)."""
    import logging

    logging.getLogger("broker_guard").setLevel(logging.CRITICAL)
    store = open_store(where)
    manager = SymbolFreezeManager(FreezePolicy(failure_threshold=10**9), store=store)
    start.wait()
    for i in range(count):
        manager.record_price_fetch_failure(f"W{i % 8}-USD", "symbol not found")
    close_store(store)


def failure_throughput(
    per_process: int, where: Callable[[], dict[str, Any]]
) -> list[tuple[str, float, float]]:
    """Failure records per second with 1, 2 and 4 processes on one shared state; the counts must add
    up (no lost update)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rows = []
    base = None
    for processes in (1, 2, 4):
        d = where()
        start = ctx.Barrier(processes + 1)
        workers = [
            ctx.Process(target=_record_failures, args=(d, w, per_process, start))
            for w in range(processes)
        ]
        for w in workers:
            w.start()
        start.wait()
        began = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - began
        reader = open_store(d)
        counted = sum(
            SymbolFreezeManager(FreezePolicy(), store=reader)
            .get_stats()["pending_symbols"]
            .values()
        )
        close_store(reader)
        total = processes * per_process
        if counted != total or any(w.exitcode for w in workers):
            raise SystemExit(
                f"lost updates: {counted} failures counted of {total} recorded by {processes} "
                f"processes"
            )
        rate = total / elapsed
        base = base or rate
        rows.append(
            (
                f"failure records/s, {processes} process(es), {total} records, none lost",
                rate,
                rate / base,
            )
        )
    return rows


def frozen_scaling(number: int) -> list[tuple[str, float, float]]:
    rows = []
    base = None
    for frozen in (10, 10_000):
        guard = guard_for(PaperBroker(prices={"BTC-USD": 1.0}))
        ctx = guard.guard_context
        policy = ctx.config.freeze
        records = {
            f"F{i}/USD": freeze_rules.new_record(
                policy, f"F{i}-USD", "bench", "", 0.0, 3, True
            ).as_dict()
            for i in range(frozen)
        }
        ctx.store.update(
            "symbol_freeze",
            lambda data, records=records: data.setdefault("frozen", {}).update(records),
        )
        ctx.clock.advance(60)  # type: ignore[attr-defined]  # the next call re-reads shared state
        guard.get_current_price("BTC-USD")
        assert guard.freeze_manager.get_stats()["frozen_count"] == frozen
        seconds = per_call(lambda g=guard: g.get_current_price("BTC-USD"), number, 3)
        base = base or seconds
        rows.append((f"guarded price call, {frozen} symbols frozen", seconds, seconds / base))
    return rows


def _bare_append_fsync(directory: str, reps: int) -> float:
    """The floor a durable change cannot go under: one line appended and fsynced."""
    path = Path(directory) / "bare.jsonl"
    line = b'{"crc":"00000000","seq":1,"set":[[["failures","X/USD"],{"count":1}]]}\n'
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        with open(path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _seed_frozen(store: Store, count: int) -> None:
    policy = FreezePolicy()
    records = {
        f"F{i}/USD": freeze_rules.new_record(
            policy, f"F{i}-USD", "bench", "", 0.0, 3, True
        ).as_dict()
        for i in range(count)
    }
    store.update("symbol_freeze", lambda d: d.setdefault("frozen", {}).update(records))
    if isinstance(store, JsonFileStore):
        store.compact("symbol_freeze")


def _notice_arrived(writer: Store, reader: Store) -> None:
    """Redis: wait (unmeasured) for the writer's last change notice to reach the reader, so the
    reader's next call measures applying it."""
    if isinstance(reader, RedisStore):
        written = writer.version("symbol_freeze")[1]  # type: ignore[index]
        reader.wait_until(lambda s: s.version("symbol_freeze")[1] >= written, timeout=5)


def failure_path_scaling(
    where: Callable[[], dict[str, Any]], sizes: list[int], reps: int, what: str
) -> list[tuple[str, float, float]]:
    """Median cost of one failure record, one freeze, and another guard's next price call after a
    change, with ``sizes`` symbols already frozen; ratios to the 0-frozen figure (and the bare
    append+fsync for files)."""
    rows: list[tuple[str, float, float]] = []
    bare = None
    if what == "files":
        bare = _bare_append_fsync(where()["data_dir"], reps)
        rows.append(("bare append + fsync of one line", bare, 1.0))
    base: dict[str, float] = {}
    for size in sizes:
        place = where()
        writer_store, reader_store = open_store(place), open_store(place)
        _seed_frozen(writer_store, size)
        writer = SymbolFreezeManager(FreezePolicy(failure_threshold=10**9), store=writer_store)
        clock = FakeClock()
        reader = GuardedBroker(
            PaperBroker(prices={"BTC-USD": 1.0}),
            GuardConfig.load(env={}, guard=place),
            store=reader_store,
            clock=clock,
        )
        reader.get_current_price("BTC-USD")
        measured = {"failure": [], "freeze": [], "reader": []}
        for i in range(reps):
            start = time.perf_counter()
            writer.record_price_fetch_failure(f"X{i % 50}-USD", "symbol not found")
            measured["failure"].append(time.perf_counter() - start)
            start = time.perf_counter()
            writer.freeze(f"Z{i}-USD", "bench")
            measured["freeze"].append(time.perf_counter() - start)
            clock.advance(2.0)  # the reader's refresh is due: it reads what changed
            _notice_arrived(writer_store, reader_store)
            start = time.perf_counter()
            reader.get_current_price("BTC-USD")
            measured["reader"].append(time.perf_counter() - start)
        assert reader.freeze_manager.is_frozen(f"Z{reps - 1}-USD")
        for store in (writer_store, reader_store):
            close_store(store)
        labels = {
            "failure": "one failure record",
            "freeze": "one freeze",
            "reader": "another guard's next price call after a change",
        }
        for key, label in labels.items():
            median = statistics.median(measured[key])
            base.setdefault(key, median)
            ratio = median / base[key]
            extra = f" ({median / bare:.1f}x bare append)" if bare and key == "failure" else ""
            rows.append((f"{label}, {size:,} frozen{extra}", median, ratio))
    return rows


def liquidation_scaling(sizes: list[int]) -> list[tuple[str, float, float]]:
    rows = []
    for kind in ("dust", "normalize"):
        base = None
        for n in sizes:
            prices = {f"A{i}-USD": 1.0 for i in range(n)}
            positions = {f"A{i}-USD": 0.5 if i % 2 else 50.0 for i in range(n)}
            guard = guard_for(PaperBroker(prices=prices, positions=positions))
            start = time.perf_counter()
            guard.dust(dry_run=False) if kind == "dust" else guard.normalize(dry_run=False)
            seconds = time.perf_counter() - start
            base = base or seconds / n
            rows.append(
                (f"{kind}() over {n} positions (per position)", seconds / n, (seconds / n) / base)
            )
    return rows


def redis_success_path(number: int, repeat: int, url: str) -> list[tuple[str, float, float]]:
    """The guarded price call on each store: a successful call never reaches the store, so the rows
    should match."""
    broker = PaperBroker(prices={"BTC-USD": 50_000.0})
    price = broker.get_current_price
    stores: list[tuple[str, Store]] = [
        ("MemoryStore", MemoryStore()),
        ("JsonFileStore", JsonFileStore(tempfile.mkdtemp())),
    ]
    stores.append(("RedisStore", RedisStore(url, prefix=f"bench{time.time_ns()}")))
    timings = [("raw get_current_price", per_call(lambda: price("BTC-USD"), number, repeat))]
    for name, store in stores:
        clock = FakeClock()
        guard = GuardedBroker(
            broker, GuardConfig.load(env={}), store=store, clock=clock, sleep=clock.sleep
        )

        def call(g: Any = guard, c: FakeClock = clock) -> None:
            # simulated time moves, so the one-second refresh runs as in a live bot
            c.advance(0.001)
            g.get_current_price("BTC-USD")

        timings.append(
            (
                f"GuardedBroker.get_current_price on {name} (clock advancing)",
                per_call(call, number, repeat),
            )
        )
        close_store(store)
    base = timings[0][1]
    return [(name, seconds, seconds / base) for name, seconds in timings]


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str | None]:
    """The Redis to measure: ``--redis-url``, else a redis-server started here on a free port, else
    None."""
    if given:
        yield given
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as d:
        # Redis's defaults: writes are not fsynced one by one
        server = RedisServer(Path(d), durable=False)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def _run_seconds(argv: list[str], runs: int, check: bool = True) -> float:
    """Median wall time of ``runs`` fresh processes (the first, warming the disk cache, dropped)."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(argv, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def startup(runs: int) -> list[tuple[str, float, float]]:
    """Process start-up: ``import broker_guard`` and CLI commands against ``python -c "import json,
    argparse"``, each a fresh interpreter (the issue's bound: --help and status at most 2x)."""
    python = sys.executable
    script = Path(python).parent / "broker-guard"
    cli = [str(script)] if script.exists() else [python, "-m", "broker_guard"]
    data_dir = tempfile.mkdtemp()
    subprocess.run([*cli, "init", "--data-dir", data_dir], check=True, stdout=subprocess.DEVNULL)
    base = _run_seconds([python, "-c", "import json, argparse"], runs)
    cases = {
        "import broker_guard": [python, "-c", "import broker_guard"],
        "broker-guard --help": [*cli, "--help"],
        "broker-guard status": [*cli, "status", "--data-dir", data_dir],
        "broker-guard health": [*cli, "health", "--data-dir", data_dir],
    }
    rows = [("python -c 'import json, argparse' (baseline)", base, 1.0)]
    for name, argv in cases.items():
        if name.endswith("health"):
            argv = [*argv, "--not-seen", "1d"]  # no bot here: exit 1 is expected, not an error
            seconds = _run_seconds(argv, runs, check=False)
        else:
            seconds = _run_seconds(argv, runs)
        rows.append((name, seconds, seconds / base))
    return rows


def cli_to_bot(samples: int) -> list[tuple[str, float, float]]:
    """From ``broker-guard unfreeze`` starting (a fresh process) to a running bot (a price call
    every 10 ms, the default refresh interval) seeing the symbol unfrozen: median and worst of
    ``samples``."""
    script = Path(sys.executable).parent / "broker-guard"
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "broker_guard"]
    where = new_data_dir()
    config = GuardConfig.load(env={}, guard={**where, "heartbeat_seconds": 0})
    guard = GuardedBroker(PaperBroker(prices={"SOL-USD": 100.0}), config)
    latencies = []
    for _ in range(samples):
        guard.freeze_manager.freeze("SOL-USD", "bench")
        launch = time.perf_counter() + random.uniform(0, 1)  # anywhere in the bot's refresh cycle
        while time.perf_counter() < launch:  # the bot trading meanwhile, refused on SOL-USD
            _swallow(guard.get_current_price, "SOL-USD")
            time.sleep(0.01)
        started = time.perf_counter()
        command = subprocess.Popen(
            [*cli, "unfreeze", "SOL-USD", "--data-dir", where["data_dir"]],
            stdout=subprocess.DEVNULL,
        )
        while True:
            try:
                guard.get_current_price("SOL-USD")
                break
            except Exception:
                time.sleep(0.01)
        latencies.append(time.perf_counter() - started)
        command.wait()
    latencies.sort()
    p50 = statistics.median(latencies)
    return [
        ("unfreeze to bot, median", p50, 1.0),
        (f"unfreeze to bot, worst of {samples}", latencies[-1], latencies[-1] / p50),
    ]


def show(title: str, rows: list[tuple[str, float, float]], per_second: bool = False) -> None:
    print(
        f"\n### {title}\n\n| case | {'per second' if per_second else 'per call'} | ratio to "
        f"baseline |\n|---|---:|---:|"
    )
    for name, value, ratio in rows:
        print(f"| {name} | {f'{value:,.0f}' if per_second else _duration(value)} | {ratio:.2f}x |")


def _duration(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f} ns" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts: check that everything runs"
    )
    parser.add_argument(
        "--redis-url",
        help="measure the Redis store on this server (default: start a local redis-server)",
    )
    args = parser.parse_args()
    import logging

    # the benchmarks measure calls, not log output
    logging.getLogger("broker_guard").setLevel(logging.CRITICAL)
    n, r = (200, 1) if args.smoke else (200_000, 7)
    print(
        f"broker_guard benchmarks on {platform.processor() or platform.machine()}, Python "
        f"{sys.version.split()[0]}, {platform.system()}"
    )
    show(
        "Start-up (fresh processes; ratio to python -c 'import json, argparse')",
        startup(2 if args.smoke else 15),
    )
    show("A CLI change reaching a running bot", cli_to_bot(2 if args.smoke else 30))
    show("Success path (sync)", success_path(n, r))
    show("Order path (sync)", order_path(n // 4, r))
    show("Success path (async)", async_path(n // 4))
    show("Failure path (zero delays)", failure_path(max(50, n // 20)))
    show(
        "Persistence (JSON store, one process)",
        persistence(20 if args.smoke else 500, new_data_dir, "disk"),
    )
    records = 10 if args.smoke else 200
    show(
        "Failure records, processes sharing a data_dir (JSON store)",
        failure_throughput(records, new_data_dir),
        per_second=True,
    )
    with redis_url(args.redis_url) as url:
        if url is None:
            print("\n### Redis store: skipped (no redis-server here; pass --redis-url)")
        else:

            def fresh() -> dict[str, Any]:  # a new prefix per measurement
                return {"store_url": url, "store_prefix": f"bench{time.time_ns()}"}

            show("Success path by store (sync)", redis_success_path(n, r, url))
            show(
                "Persistence (Redis store, one process, loopback)",
                persistence(20 if args.smoke else 500, fresh, "Redis"),
            )
            show(
                "Failure records, processes sharing one Redis",
                failure_throughput(records * 5, fresh),
                per_second=True,
            )
    show("Price call vs number of frozen symbols", frozen_scaling(n // 4))
    sizes = [0, 100] if args.smoke else [0, 100, 1_000, 10_000]
    reps = 5 if args.smoke else 200
    show(
        "Failure path vs state size (JSON store; ratio to 0 frozen)",
        failure_path_scaling(new_data_dir, sizes, reps, "files"),
    )
    with redis_url(args.redis_url) as url:
        if url is not None:

            def fresh_prefix() -> dict[str, Any]:
                return {"store_url": url, "store_prefix": f"bench{time.time_ns()}"}

            show(
                "Failure path vs state size (Redis store; ratio to 0 frozen)",
                failure_path_scaling(fresh_prefix, sizes, reps, "redis"),
            )
    show(
        "Liquidation scaling",
        liquidation_scaling([10, 100] if args.smoke else [10, 100, 1_000, 10_000]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
