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


def test_update_read_and_the_document_in_redis(
    make_redis_store: Make, redis_server: Any, redis_prefix: str
) -> None:
    store = make_redis_store()
    assert store.read("state") == {}
    assert store.update("state", _incr) == ({"n": 1}, 1)
    assert store.update("state", _incr) == ({"n": 2}, 2)
    doc = json.loads(_raw(redis_server).get(f"{redis_prefix}:state:state"))
    assert (
        doc["schema_version"] == 1
        and doc["revision"] == 2
        and doc["data"] == {"n": 2}
        and doc["updated_at"].endswith("+00:00")
    )
    # previous good copy
    assert json.loads(_raw(redis_server).get(f"{redis_prefix}:state:state:bak"))["data"] == {"n": 1}
    assert store.read("state") == {"n": 2} and store.health().ok


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


def test_corrupt_document_is_renamed_aside_and_the_last_good_copy_restored(
    make_redis_store: Make, redis_server: Any, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_redis_store()
    store.update("state", _incr)
    store.update("state", _incr)  # bak holds n=1
    raw = _raw(redis_server)
    # a torn write by some other tool
    raw.set(f"{redis_prefix}:state:state", b'{"schema_version": 1, "data": {"n": 2')
    with caplog.at_level(logging.CRITICAL, logger="broker_guard.store.redis"):
        # an update always reads the server's copy
        assert store.update("state", _incr) == (
            {"n": 2},
            2,
        )
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    aside = raw.keys(f"{redis_prefix}:state:state:corrupt-*")
    assert len(aside) == 1 and raw.get(aside[0]).startswith(b'{"schema_version": 1, "data"')
    assert store.health().recovered
    raw.set(f"{redis_prefix}:state:state", b"\x00garbage")
    # a new worker's first read repairs it too (from the copy before)
    assert make_redis_store().read("state") == {"n": 1}


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
    assert 3_500_000 < raw.pttl(f"{redis_prefix}:state:balances") <= 3_600_000
    # freezes never expire by themselves
    assert raw.pttl(f"{redis_prefix}:state:symbol_freeze") == -1


def test_config_selects_the_store(redis_server: Any, redis_prefix: str, tmp_path: Path) -> None:
    file_store = store_from_config(GuardConfig.load(env={}, data_dir=str(tmp_path)))
    assert type(file_store).__name__ == "JsonFileStore"
    env = {"BROKER_GUARD_STORE_URL": redis_server.url, "BROKER_GUARD_STORE_PREFIX": redis_prefix}
    config = GuardConfig.load(env=env, guard={"balance_ttl_hours": 2.0, "audit_max_records": 5})
    with store_from_config(config) as store:  # type: ignore[attr-defined]
        assert isinstance(store, RedisStore) and store.prefix == redis_prefix
        store.update("balances", _incr)
        assert 7_100_000 < _raw(redis_server).pttl(f"{redis_prefix}:state:balances") <= 7_200_000


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
        assert json.loads(redis.Redis.from_url(server.url).get("restart:state:state"))["data"] == {
            "n": 2
        }
    finally:
        server.stop()


def test_a_late_notice_does_not_overwrite_changes_made_during_an_outage(
    make_redis_store: Make, link: TcpLink
) -> None:
    """A notice already in the listener's socket buffer when the link drops is read after the outage
    began;
    it carries the document from before, which must not replace what this process changed since."""
    store = make_redis_store(url=link.url())
    store.update("state", lambda d: d.update(count=1))
    link.cut()
    store.update("state", lambda d: d.update(count=d["count"] + 1))  # in memory, queued
    late = {
        "schema_version": 1,
        "revision": 1,
        "updated_at": "2026-01-01T00:00:00+00:00",
        "data": {"count": 1},
    }
    # the listener reading the old notice late
    store._on_message(f"state 1 {json.dumps(late)}".encode())
    assert store.read("state") == {"count": 2}
