"""RedisStore against a real redis-server: the store contract, atomic updates across workers, change
notices, recovery, TTLs, secrets, and an outage (a cut link and a stopped server) with its
replay."""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer
from tcp_link import TcpLink

from broker_guard import ConfigError, GuardConfig, RedisStore, StoreError
from broker_guard.redact import redact
from broker_guard.state.select import store_from_config

Make = Callable[..., RedisStore]


def _incr(data: dict[str, Any]) -> int:
    data["n"] = data.get("n", 0) + 1
    return int(data["n"])


def _raw(server: Any) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def _hash(server: Any, key: str) -> dict[str, Any]:
    return {json.dumps(json.loads(k)): json.loads(v) for k, v in _raw(server).hgetall(key).items()}


def test_update_read_and_the_records_in_redis(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    store = make_redis_store()
    assert store.read("state") == {}
    assert store.update("state", _incr) == ({"n": 1}, 1)
    assert store.update("state", _incr) == ({"n": 2}, 2)
    store.update("state", lambda d: d.update(frozen={"SIG/USD": {"count": 3}}))
    raw = _raw(redis_server)
    # one hash field per record, named by its path
    assert _hash(redis_server, f"{redis_prefix}:rec:state") == {
        '["n"]': 2,
        '["frozen", "SIG/USD"]': {"count": 3},
    }
    meta = raw.hgetall(f"{redis_prefix}:meta:state")
    assert meta[b"seq"] == b"3" and meta[b"schema_version"] == b"2" and meta[b"gen"]
    assert meta[b"updated_at"].endswith(b"+00:00")
    # the log holds each change at its sequence number
    entries = raw.xrange(f"{redis_prefix}:log:state")
    assert [e[0] for e in entries] == [b"1-0", b"2-0", b"3-0"]
    assert json.loads(entries[2][1][b"set"]) == [[["frozen", "SIG/USD"], {"count": 3}]]
    assert store.read("state") == {"n": 2, "frozen": {"SIG/USD": {"count": 3}}}
    assert store.health().ok


def test_a_keyed_change_reads_and_writes_only_its_records(
    make_redis_store: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_redis_store()
    big = {f"S{i}": {"count": i} for i in range(2000)}
    store.update("s", lambda d: d.update(frozen=big))
    seen: list[dict[str, Any]] = []

    def bump(d: dict[str, Any]) -> None:
        seen.append(json.loads(json.dumps(d)))
        d["frozen"]["S7"]["count"] += 1

    monkeypatch.setattr(store._client, "hgetall", _refuse)  # no full read
    store.update("s", bump, keys=[("frozen", "S7")])
    assert seen == [{"frozen": {"S7": {"count": 7}}}]
    monkeypatch.undo()
    assert store.read("s")["frozen"]["S7"] == {"count": 8}
    assert len(store.read("s")["frozen"]) == 2000


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a keyed change must not read the whole state")


def test_workers_changing_different_records_never_conflict(make_redis_store: Make) -> None:
    a, b = make_redis_store(), make_redis_store()
    runs = {"a": 0, "b": 0}

    def counting(who: str, key: str) -> Callable[[dict[str, Any]], None]:
        def change(d: dict[str, Any]) -> None:
            runs[who] += 1
            section = d.setdefault("failures", {})
            section[key] = section.get(key, 0) + 1

        return change

    for _ in range(20):
        a.update("s", counting("a", "A"), keys=[("failures", "A")])
        b.update("s", counting("b", "B"), keys=[("failures", "B")])
    assert runs == {"a": 20, "b": 20}  # each change computed once: no retry
    assert a.read("s") == {"failures": {"A": 20, "B": 20}}


def test_a_conflicting_change_is_computed_again_on_the_new_record(
    make_redis_store: Make,
) -> None:
    a, b = make_redis_store(), make_redis_store()
    a.update("s", lambda d: d.update(failures={"X": 1}), keys=[("failures", "X")])
    attempts: list[int] = []

    def change(d: dict[str, Any]) -> None:
        attempts.append(d["failures"]["X"])
        if len(attempts) == 1:  # another worker changes the record in between
            b.update("s", lambda e: e["failures"].update(X=10), keys=[("failures", "X")])
        d["failures"]["X"] += 1

    a.update("s", change, keys=[("failures", "X")])
    assert attempts == [1, 10] and a.read("s") == {"failures": {"X": 11}}


def test_a_change_reaches_another_store_by_notice_without_a_read(make_redis_store: Make) -> None:
    a, b = make_redis_store(), make_redis_store()
    assert b.wait_until(lambda s: s.version("state")[0] >= 1)  # subscribed
    before = b.version("state")
    a.update("state", _incr)
    assert b.wait_until(lambda s: s.version("state") != before, timeout=5)  # pushed, not polled
    assert b.read("state") == {"n": 1}


def test_prefixes_keep_deployments_apart(make_redis_store: Make) -> None:
    a, b = make_redis_store(prefix="fleet-a"), make_redis_store(prefix="fleet-b")
    a.update("state", _incr)
    assert b.read("state") == {}


def test_threads_on_two_stores_lose_no_update(make_redis_store: Make) -> None:
    stores = [make_redis_store(), make_redis_store()]

    def hammer(store: RedisStore) -> None:
        for _ in range(50):
            store.update("state", _incr)

    threads = [threading.Thread(target=hammer, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].read("state") == {"n": 400}  # WATCH retried every conflicting transaction


def _hammer_process(url: str, prefix: str, count: int) -> None:
    with RedisStore(url, prefix=prefix) as store:
        for _ in range(count):
            store.update("state", _incr)


def test_processes_lose_no_update(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_hammer_process, args=(redis_server.url, redis_prefix, 150))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert make_redis_store().read("state") == {"n": 450}


def test_a_damaged_record_is_quarantined_and_read_as_damaged(
    make_redis_store: Make, redis_server: Any, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_redis_store()
    store.update("s", lambda d: d.update(frozen={"SIG/USD": {"n": 1}, "ETH/USD": {"n": 2}}))
    raw = _raw(redis_server)
    # a torn write by some other tool
    raw.hset(f"{redis_prefix}:rec:s", '["frozen","SIG/USD"]', b'{"n": 1')
    with caplog.at_level(logging.CRITICAL, logger="broker_guard.store.redis"):
        found = make_redis_store().read("s")
    assert found["frozen"]["ETH/USD"] == {"n": 2}  # the rest is kept
    assert "quarantined" in found["frozen"]["SIG/USD"]  # read as damaged: its symbol stays blocked
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    aside = raw.xrange(f"{redis_prefix}:quarantine:s")
    assert len(aside) == 1 and aside[0][1][b"value"] == b'{"n": 1'


def test_a_damaged_record_keeps_its_symbol_frozen_for_review(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    from broker_guard import GuardConfig, GuardedBroker, SymbolFrozenError
    from broker_guard.testing import PaperBroker

    store = make_redis_store()
    guard: Any = GuardedBroker(PaperBroker(), GuardConfig.load(env={}), store=store)
    guard.freeze_manager.freeze("SOL-USD", "operator")
    _raw(redis_server).hset(f"{redis_prefix}:rec:symbol_freeze", '["frozen","SOL/USD"]', b"{")
    fresh: Any = GuardedBroker(PaperBroker(), GuardConfig.load(env={}), store=make_redis_store())
    with pytest.raises(SymbolFrozenError):
        fresh.place_market_order("SOL-USD", "buy", 0.01)
    assert not fresh.health()["ok"]


def test_a_damaged_sequence_number_refuses_every_entry(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    from broker_guard import GuardConfig, GuardedBroker
    from broker_guard.errors import StateUnconfirmedError
    from broker_guard.testing import PaperBroker

    store = make_redis_store()
    store.update("symbol_freeze", lambda d: d.update(frozen={}))
    guard: Any = GuardedBroker(PaperBroker(), GuardConfig.load(env={}), store=store)
    guard.freeze_manager.freeze("SOL-USD", "operator")
    _raw(redis_server).hset(f"{redis_prefix}:meta:symbol_freeze", "seq", "garbage")
    fresh: Any = GuardedBroker(PaperBroker(), GuardConfig.load(env={}), store=make_redis_store())
    with pytest.raises(StateUnconfirmedError):
        fresh.place_market_order("ETH-USD", "buy", 0.01)
    with pytest.raises(StoreError, match="sequence number"):
        make_redis_store().update("symbol_freeze", _incr)


def test_audit_records_go_to_a_capped_stream(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    store = make_redis_store(audit_max_records=10)
    for k in range(25):
        store.append("audit", {"k": k})
    # the newest ten, oldest first
    assert [r["k"] for r in store.read_lines("audit")] == list(range(15, 25))
    assert _raw(redis_server).xlen(f"{redis_prefix}:audit:audit") == 10


def test_ttl_expires_only_the_states_named(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    store = make_redis_store(ttl_seconds={"balances": 3600})
    store.update("balances", _incr)
    store.update("symbol_freeze", _incr)
    raw = _raw(redis_server)
    for kind in ("rec", "meta", "log"):
        assert 3_500_000 < raw.pttl(f"{redis_prefix}:{kind}:balances") <= 3_600_000
        # freezes never expire by themselves
        assert raw.pttl(f"{redis_prefix}:{kind}:symbol_freeze") == -1


def test_config_selects_the_store(redis_server: Any, redis_prefix: str, tmp_path: Path) -> None:
    file_store = store_from_config(GuardConfig.load(env={}, data_dir=str(tmp_path)))
    assert type(file_store).__name__ == "JsonFileStore"
    env = {"BROKER_GUARD_STORE_URL": redis_server.url, "BROKER_GUARD_STORE_PREFIX": redis_prefix}
    config = GuardConfig.load(env=env, guard={"balance_ttl_hours": 2.0, "audit_max_records": 5})
    with store_from_config(config) as store:  # type: ignore[attr-defined]
        assert isinstance(store, RedisStore) and store.prefix == redis_prefix
        store.update("balances", _incr)
        assert 7_100_000 < _raw(redis_server).pttl(f"{redis_prefix}:rec:balances") <= 7_200_000


def test_bad_arguments_are_refused_with_the_setting_named() -> None:
    with pytest.raises(ConfigError, match="store_prefix"):
        RedisStore("redis://127.0.0.1:1/0", prefix="has space")
    with pytest.raises(ConfigError, match="store_url"):
        RedisStore("http://127.0.0.1:1/0")


def test_the_url_password_never_reaches_health_or_logs(
    redis_server: Any, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = "s3cret-redis-passw0rd"
    _raw(redis_server).execute_command("CONFIG", "SET", "requirepass", password)
    try:
        url = redis_server.url.replace("redis://", f"redis://:{password}@")
        with caplog.at_level(logging.DEBUG), RedisStore(url, prefix=redis_prefix) as store:
            store.update("state", _incr)
            assert password not in store.health().location and ":***@" in store.health().location
            # the password is known to every guard's masking: text entering state is masked
            assert redact(f"refused by {url}") == f"refused by {url}".replace(password, "***")
        assert password not in caplog.text
    finally:
        redis.Redis.from_url(url).execute_command("CONFIG", "SET", "requirepass", "")


# -- outages --------------------------------------------------------------------------------------


@pytest.fixture
def link(redis_server: Any) -> Any:
    link = TcpLink(redis_server.port)
    yield link
    link.close()


def test_a_cut_link_degrades_to_memory_and_replays_only_what_is_safe(
    make_redis_store: Make, link: TcpLink
) -> None:
    store = make_redis_store(url=link.url(), max_retry_delay=0.2)
    other = make_redis_store()  # another worker, still connected
    assert store.wait_until(lambda s: s.version("state")[0] >= 1)
    store.update("state", lambda d: d.update(count=1, reset_me=5))

    link.cut()
    # safe to re-apply later
    data, _ = store.update("state", lambda d: d.update(count=d["count"] + 1))
    assert data["count"] == 2 and not store.health().ok
    # a reset: the fleet may have moved on
    store.update("state", lambda d: d.pop("reset_me"), replay=False)
    assert store.read("state") == {"count": 2}  # served from memory
    assert "1 change(s) queued" in store.health().degraded["redis"]
    # meanwhile, elsewhere
    other.update("state", lambda d: d.update(count=d["count"] + 10, reset_me=7))

    link.heal()
    assert store.wait_until(lambda s: s.health().ok, timeout=10)  # reconnected by itself
    # the increment replayed, the stale reset not
    assert store.read("state") == {
        "count": 12,
        "reset_me": 7,
    }
    assert other.read("state") == {"count": 12, "reset_me": 7}


def test_audit_records_are_refused_loudly_while_redis_is_down(
    make_redis_store: Make, link: TcpLink
) -> None:
    store = make_redis_store(url=link.url())
    link.cut()
    with pytest.raises(StoreError, match="audit record not written"):
        # the caller places no order without its audit line
        store.append("audit", {"order": "pending"})


def test_the_cli_mode_fails_instead_of_working_from_memory(
    make_redis_store: Make, link: TcpLink
) -> None:
    store = make_redis_store(url=link.url(), degrade=False)
    link.cut()
    with pytest.raises(StoreError, match=r"unreachable.*nothing was changed"):
        store.update("state", _incr)
    with pytest.raises(StoreError):
        store.read("state")


def test_a_server_stopped_and_restarted_keeps_its_state_and_gets_the_replay(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with RedisStore(server.url, prefix="restart", max_retry_delay=0.2) as store:
            store.update("state", _incr)
            server.stop()
            assert store.update("state", _incr) == ({"n": 2}, 2)  # from memory
            assert not store.health().ok and "unreachable" in store.health().degraded["redis"]
            server.start()  # same port, same append-only file
            assert store.wait_until(lambda s: s.health().ok, timeout=15)
            assert store.read("state") == {"n": 2}
        assert redis.Redis.from_url(server.url).hgetall("restart:rec:state") == {b'["n"]': b"2"}
    finally:
        server.stop()


def test_a_late_notice_does_not_overwrite_changes_made_during_an_outage(
    make_redis_store: Make, link: TcpLink
) -> None:
    """A notice already in the listener's socket buffer when the link drops is read after the outage
    began; it carries a change from before, which must not replace what this process changed
    since."""
    store = make_redis_store(url=link.url())
    store.load("state")
    store.update("state", lambda d: d.update(count=1))
    gen = store._replicas["state"].gen
    link.cut()
    store.update("state", lambda d: d.update(count=d["count"] + 1))  # in memory, queued
    # the listener reading an old notice late
    store._on_message(f'state {gen} 2 [[["count"],1]]'.encode())
    assert store.read("state") == {"count": 2}


# -- notices, gaps, generations, migration ----------------------------------------------------


def _followed(store: RedisStore, name: str, seq: int) -> bool:
    return store.version(name)[1] >= seq


def _subscribed(*stores: RedisStore) -> None:
    """Each store's listener has subscribed (its first epoch begins: cursors from before are read
    again in full, since notices may have been missed until then)."""
    for store in stores:
        assert store.wait_until(lambda s: s.version("any")[0] >= 1, timeout=5)


def test_a_reader_learns_what_changed_from_the_notice_alone(
    make_redis_store: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = make_redis_store(), make_redis_store()
    _subscribed(writer, reader)
    writer.update("s", lambda d: d.update(frozen={f"S{i}": {"n": i} for i in range(500)}))
    cursor, found = reader.load("s")
    assert len(found["frozen"]) == 500
    writer.update("s", lambda d: d.update(frozen={"NEW": {"n": -1}}), keys=[("frozen", "NEW")])
    assert reader.wait_until(lambda s: _followed(s, "s", cursor[1] + 1), timeout=5)
    for command in ("hgetall", "hmget", "get", "xrange", "pipeline"):
        monkeypatch.setattr(reader._client, command, _refuse)  # no round trip at all
    got = reader.changes("s", cursor)
    assert got is not None
    new_cursor, changes = got
    assert [(c.path, c.value) for c in changes] == [(("frozen", "NEW"), {"n": -1})]
    assert reader.changes("s", new_cursor) == (new_cursor, [])


def test_missed_notices_are_filled_from_the_log_in_order(make_redis_store: Make) -> None:
    a, b = make_redis_store(), make_redis_store()
    _subscribed(a, b)
    cursor, _ = b.load("s")
    b._on_message = lambda message: None  # type: ignore[method-assign]  # notices lost
    for key in ("X", "Y", "Z"):
        a.update("s", lambda d, k=key: d.setdefault("f", {}).update({k: 1}), keys=[("f", key)])
    b.update("s", lambda d: d.setdefault("f", {}).update(B=1), keys=[("f", "B")])  # b's own
    got = b.changes("s", cursor)
    assert got is not None
    assert [c.path for c in got[1]] == [("f", "X"), ("f", "Y"), ("f", "Z"), ("f", "B")]
    assert [c.seq for c in got[1]] == [1, 2, 3, 4]


def test_a_gap_the_log_no_longer_holds_makes_readers_load_everything(
    make_redis_store: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_redis_store(), make_redis_store()
    _subscribed(a, b)
    cursor, _ = b.load("s")
    b._on_message = lambda message: None  # type: ignore[method-assign]
    a.update("s", lambda d: d.update(f={"X": 1}), keys=[("f", "X")])
    _raw_of(a).delete(f"{a.prefix}:log:s")  # trimmed away
    b.update("s", lambda d: d.setdefault("f", {}).update(B=1), keys=[("f", "B")])
    assert b.changes("s", cursor) is None  # never a partial history
    assert b.load("s")[1] == {"f": {"X": 1, "B": 1}}


def _raw_of(store: RedisStore) -> redis.Redis:
    return redis.Redis.from_url(store.url)


def test_a_state_created_anew_on_the_server_is_read_again_and_reported(
    make_redis_store: Make, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_redis_store(), make_redis_store()
    _subscribed(a, b)
    a.update("s", lambda d: d.update(frozen={"SOL/USD": {"n": 1}}), keys=[("frozen", "SOL/USD")])
    cursor, _ = b.load("s")
    raw = _raw_of(a)
    raw.delete(*(f"{a.prefix}:{kind}:s" for kind in ("rec", "meta", "log")))  # FLUSH, or lost data
    with caplog.at_level(logging.CRITICAL, logger="broker_guard.store.redis"):
        a.update(
            "s", lambda d: d.update(frozen={"ETH/USD": {"n": 1}}), keys=[("frozen", "ETH/USD")]
        )
        assert b.wait_until(lambda s: s.version("s")[0] > cursor[0], timeout=5)
    assert b.changes("s", cursor) is None
    new_cursor, found = b.load("s")
    assert found == {"frozen": {"ETH/USD": {"n": 1}}} and new_cursor > cursor
    assert "created anew" in caplog.text and "SOL/USD" in caplog.text


def test_a_worker_on_the_old_layout_is_reported(make_redis_store: Make) -> None:
    store = make_redis_store()
    assert store.wait_until(lambda s: s.version("s")[0] >= 1)
    old_doc = {"schema_version": 1, "revision": 4, "data": {}}
    _raw_of(store).publish(f"{store.prefix}:changes", f"symbol_freeze 4 {json.dumps(old_doc)}")
    assert store.wait_until(lambda s: not s.health().ok, timeout=5)
    assert "Upgrade every worker" in store.health().degraded["redis layout"]


def _old_document(data: dict[str, Any], revision: int) -> str:
    return json.dumps({"schema_version": 1, "revision": revision, "data": data})


def test_a_state_written_by_0_1_is_migrated_once(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    raw = _raw(redis_server)
    data = {"frozen": {"SIG/USD": {"reason": "x"}}, "failures": {"A/USD": {"count": 2}}}
    raw.set(f"{redis_prefix}:state:symbol_freeze", _old_document(data, 7))
    stores = [make_redis_store() for _ in range(3)]
    threads = [threading.Thread(target=s.read, args=("symbol_freeze",)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        assert store.read("symbol_freeze") == data
    assert raw.hget(f"{redis_prefix}:meta:symbol_freeze", "seq") == b"7"
    assert raw.get(f"{redis_prefix}:state:symbol_freeze") is None
    kept = raw.get(f"{redis_prefix}:state:symbol_freeze:v1-migrated")
    assert json.loads(kept)["data"] == data
    stores[0].update("symbol_freeze", lambda d: d["failures"]["A/USD"].update(count=3))
    assert stores[1].read("symbol_freeze")["failures"]["A/USD"] == {"count": 3}


def test_a_damaged_0_1_state_is_migrated_from_its_copy_or_reported(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    raw = _raw(redis_server)
    raw.set(f"{redis_prefix}:state:a", b'{"torn')
    raw.set(f"{redis_prefix}:state:a:bak", _old_document({"n": 1}, 1))
    raw.set(f"{redis_prefix}:state:b", b'{"torn')
    store = make_redis_store()
    assert store.read("a") == {"n": 1} and store.health().recovered
    assert store.read("b") == {}
    assert not store.health().ok and "not migrated" in store.health().quarantined[0]
    assert raw.get(f"{redis_prefix}:state:b") == b'{"torn'  # left for review


def test_a_damaged_record_naming_no_symbol_refuses_entries_until_acknowledged(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    from broker_guard import GuardConfig, GuardedBroker
    from broker_guard.errors import StateUnconfirmedError
    from broker_guard.testing import PaperBroker

    raw = _raw(redis_server)
    raw.hset(f"{redis_prefix}:rec:symbol_freeze", b"\xff\x00[froz", b'{"reason":')
    paper = PaperBroker(prices={"ETH-USD": 2_500.0})
    guard: Any = GuardedBroker(paper, GuardConfig.load(env={}), store=make_redis_store())
    with pytest.raises(StateUnconfirmedError, match="acknowledge-damage"):
        guard.place_market_order("ETH-USD", "buy", 0.01)
    assert not paper.orders and not guard.health()["ok"]
    other: Any = GuardedBroker(
        PaperBroker(prices={"ETH-USD": 2_500.0}), GuardConfig.load(env={}), store=make_redis_store()
    )
    assert len(other.freeze_manager.acknowledge_damage()) == 1
    assert raw.hgetall(f"{redis_prefix}:rec:symbol_freeze") == {}  # reviewed: gone
    assert raw.xrange(f"{redis_prefix}:quarantine:symbol_freeze")  # kept aside (once per worker)
    assert guard.freeze_manager.store.wait_until(
        lambda s: s.version("symbol_freeze")[1] >= 1, timeout=5
    )
    guard.freeze_manager._refresh(force=True)
    guard.place_market_order("ETH-USD", "buy", 0.01)
    fresh: Any = GuardedBroker(
        PaperBroker(prices={"ETH-USD": 2_500.0}), GuardConfig.load(env={}), store=make_redis_store()
    )
    fresh.place_market_order("ETH-USD", "buy", 0.01)


# -- found by review (session 6): each failed before its fix -----------------------------------


def _resubscribe(store: RedisStore, redis_server: Any) -> None:
    """A blip on the notice connection: redis-py subscribes again, the store re-reads."""
    epoch = store.version("x")[0]
    _raw(redis_server).client_kill_filter(_type="pubsub")
    assert store.wait_until(lambda s: s.version("x")[0] > epoch, timeout=10)


def test_one_unreadable_state_after_a_reconnect_does_not_deafen_the_others(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    a, b = make_redis_store(max_retry_delay=0.05), make_redis_store()
    _subscribed(a, b)
    a.update("balances", lambda d: d.update(usd=100))
    a.load("s")
    _raw(redis_server).hset(f"{redis_prefix}:meta:balances", "seq", "garbage")
    _resubscribe(a, redis_server)
    b.update("s", lambda d: d.update(frozen={"SIG/USD": {"n": 1}}), keys=[("frozen", "SIG/USD")])
    assert a.wait_until(lambda s: s.version("s")[1] >= 1, timeout=5)
    assert a.load("s")[1] == {"frozen": {"SIG/USD": {"n": 1}}}
    with pytest.raises(StoreError, match="sequence number"):
        a.load("balances")  # its readers refuse entries


def test_a_change_replayed_after_an_outage_migrates_the_0_1_state_first(
    make_redis_store: Make, redis_server: Any, redis_prefix: str, link: TcpLink
) -> None:
    old = {"frozen": {"SIG/USD": {"reason": "delisted"}}}
    _raw(redis_server).set(f"{redis_prefix}:state:symbol_freeze", _old_document(old, 3))
    store = make_redis_store(url=link.url(), max_retry_delay=0.05)
    link.cut()
    store.update(
        "symbol_freeze",
        lambda d: d.update(failures={"ABC/USD": {"count": 1}}),
        keys=[("failures", "ABC/USD")],
    )
    link.heal()
    assert store.wait_until(lambda s: s.health().ok, timeout=10)
    found = make_redis_store().read("symbol_freeze")
    assert found == {**old, "failures": {"ABC/USD": {"count": 1}}}


def test_a_server_that_comes_back_empty_is_reported(
    make_redis_store: Make, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_redis_store(max_retry_delay=0.05)
    _subscribed(store)
    store.update(
        "s", lambda d: d.update(frozen={"SIG/USD": {"n": 1}}), keys=[("frozen", "SIG/USD")]
    )
    for kind in ("rec", "meta", "log"):
        _raw(redis_server).delete(f"{store.prefix}:{kind}:s")
    with caplog.at_level(logging.CRITICAL, logger="broker_guard.store.redis"):
        _resubscribe(store, redis_server)
    assert "created anew" in caplog.text and "SIG/USD" in caplog.text


def test_a_null_record_is_damaged_not_deleted(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    _raw(redis_server).hset(f"{redis_prefix}:rec:s", '["frozen","SIG/USD"]', b"null")
    found = make_redis_store().read("s")
    assert "quarantined" in found["frozen"]["SIG/USD"]


def test_migration_takes_the_document_a_0_1_worker_wrote_meanwhile(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    raw = _raw(redis_server)
    key = f"{redis_prefix}:state:symbol_freeze"
    raw.set(key, _old_document({"frozen": {"A/USD": {"n": 1}}}, 1))
    store = make_redis_store()
    script = store._migrate_script
    calls = []

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not calls:  # a 0.1 worker freezes SIG/USD between the read and the migration
            raw.set(key, _old_document({"frozen": {"A/USD": {"n": 1}, "SIG/USD": {"n": 2}}}, 2))
        calls.append(1)
        return script(*args, **kwargs)

    store._migrate_script = meanwhile  # type: ignore[method-assign]
    assert set(store.read("symbol_freeze")["frozen"]) == {"A/USD", "SIG/USD"}


def test_changes_handed_to_readers_are_not_the_writers_objects(make_redis_store: Make) -> None:
    store = make_redis_store()
    _subscribed(store)
    cursor, _ = store.load("s")
    doc, _ = store.update("s", lambda d: d.update(f={"X": {"n": 1}}), keys=[("f", "X")])
    doc["f"]["X"]["n"] = 99  # the caller keeps using what update() returned
    got = store.changes("s", cursor)
    assert got is not None and [c.value for c in got[1]] == [{"n": 1}]
