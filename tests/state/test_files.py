from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import filelock
import pytest

from broker_guard import JsonFileStore, MemoryStore, StoreError, StoreLockTimeoutError


def _incr(data: dict[str, Any]) -> int:
    data["n"] = data.get("n", 0) + 1
    return int(data["n"])


def test_a_change_is_one_fsynced_self_checking_journal_line(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "d")
    data, result = store.update("state", _incr)
    assert data == {"n": 1} and result == 1
    path = tmp_path / "d" / "state.journal"
    (line,) = path.read_bytes().splitlines()
    assert line.startswith(b'{"crc":"') and json.loads(line)["seq"] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    store.update("state", _incr)
    assert len(path.read_bytes().splitlines()) == 2
    store.compact("state")
    snapshot = json.loads((tmp_path / "d" / "state.snapshot.json").read_text())
    assert snapshot["schema_version"] == 2 and snapshot["seq"] == 2
    assert snapshot["records"] == {"n": 2}
    assert JsonFileStore(tmp_path / "d").read("state") == {"n": 2}
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]


def test_a_keyed_change_writes_only_its_records(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.update("s", lambda d: d.update(frozen={f"S{i}": {"n": i} for i in range(500)}))
    store.compact("s")
    size = (tmp_path / "s.journal").stat().st_size

    def touch(doc: dict[str, Any]) -> None:
        assert doc == {"frozen": {"S7": {"n": 7}}}  # handed its record only
        doc["frozen"]["S7"]["n"] = 70

    store.update("s", touch, keys=[("frozen", "S7")])
    assert (tmp_path / "s.journal").stat().st_size - size < 200
    assert JsonFileStore(tmp_path).read("s")["frozen"]["S7"] == {"n": 70}


def test_a_second_store_on_the_same_dir_sees_changes(tmp_path: Path) -> None:
    a, b = JsonFileStore(tmp_path), JsonFileStore(tmp_path)
    before = b.version("state")
    a.update("state", _incr)
    assert b.version("state") != before
    assert b.read("state") == {"n": 1}


def test_a_damaged_journal_line_is_quarantined_and_its_records_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    store.update("s", lambda d: d.update(frozen={"SIG": {"n": 1}}), keys=[("frozen", "SIG")])
    store.update("s", lambda d: d.update(frozen={"AUT": {"n": 2}}), keys=[("frozen", "AUT")])
    path = tmp_path / "s.journal"
    first, second = path.read_bytes().splitlines()
    path.write_bytes(first + b"\n" + second.replace(b'"n":2', b'"n":3') + b"\n")  # bit rot
    with caplog.at_level(logging.CRITICAL, logger="broker_guard.store"):
        records = JsonFileStore(tmp_path).read("s")
    assert records["frozen"]["SIG"] == {"n": 1}
    assert "quarantined" in records["frozen"]["AUT"]  # named by the damaged line: held
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    assert (tmp_path / "s.quarantine.jsonl").read_bytes().strip() == second.replace(
        b'"n":2', b'"n":3'
    )


def test_a_damaged_line_read_again_holds_its_records_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path)
    store.update("s", lambda d: d.update(frozen={"AUT": {"n": 2}}), keys=[("frozen", "AUT")])
    path = tmp_path / "s.journal"
    path.write_bytes(path.read_bytes().replace(b'"n":2', b'"n":3'))  # bit rot
    reader = JsonFileStore(tmp_path)
    assert "quarantined" in reader.read("s")["frozen"]["AUT"]
    real_fsync = os.fsync

    def full_disk(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("broker_guard.state.files.os.fsync", full_disk)
    reader.update("s", lambda d: d.update(frozen={"X": {"n": 1}}), keys=[("frozen", "X")])
    monkeypatch.setattr("broker_guard.state.files.os.fsync", real_fsync)
    store.update("s", lambda d: d.update(frozen={"Y": {"n": 1}}), keys=[("frozen", "Y")])
    # the reader reloads from disk under its changes kept in memory, reading the line again
    assert "quarantined" in reader.read("s")["frozen"]["AUT"]


def test_a_torn_last_line_is_cut_by_the_next_writer(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    with open(tmp_path / "state.journal", "ab") as handle:
        handle.write(b'{"crc":"00000000","seq":2,"set":[[["n"],')  # killed mid-line
    other = JsonFileStore(tmp_path)
    assert other.read("state") == {"n": 1}  # a reader waits for the rest of the line
    other.update("state", _incr)
    assert JsonFileStore(tmp_path).read("state") == {"n": 2}
    assert other.health().ok


def test_a_data_dir_written_by_0_1_is_migrated(tmp_path: Path) -> None:
    doc = {"schema_version": 1, "data": {"frozen": {"SIG": {"symbol": "SIG"}}, "failures": {}}}
    (tmp_path / "symbol_freeze.json").write_text(json.dumps(doc))
    store = JsonFileStore(tmp_path)
    assert store.read("symbol_freeze") == doc["data"]
    assert (tmp_path / "symbol_freeze.json.v1-migrated").exists()
    assert JsonFileStore(tmp_path).read("symbol_freeze") == doc["data"]


def test_tmp_files_left_by_a_killed_writer_are_cleaned_up(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f".state.snapshot.json.{i}.1.tmp").write_bytes(b"partial")
    JsonFileStore(tmp_path).update("state", _incr)
    assert not list(tmp_path.glob("*.tmp"))


def test_the_audit_log_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (tmp_path / "audit.jsonl").symlink_to(target)
    store = JsonFileStore(tmp_path)
    with pytest.raises(StoreError, match="not written"):
        store.append("audit", {"i": 1})
    assert target.read_text() == ""


def test_parent_directories_are_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        JsonFileStore(tmp_path / "a" / "b").update("state", _incr)
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_dir_degrades_to_memory_and_replays_later(tmp_path: Path) -> None:
    _read_only_roundtrip(tmp_path)


def test_unwritable_dir_degrades_to_memory_and_replays_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    real_fsync = os.fsync

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("broker_guard.state.files.os.fsync", full_disk)
    data, _ = store.update("state", _incr)
    assert data == {"n": 2}  # the caller goes on
    assert not store.health().ok and "No space" in next(iter(store.health().degraded.values()))
    monkeypatch.setattr("broker_guard.state.files.os.fsync", real_fsync)
    data, _ = store.update("state", _incr)
    assert data == {"n": 3}  # the change made in memory was replayed onto disk
    assert JsonFileStore(tmp_path).read("state") == {"n": 3}
    assert store.health().ok


def _read_only_roundtrip(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    tmp_path.chmod(0o500)
    try:
        data, _ = store.update("state", _incr)
        assert data == {"n": 2} and not store.health().ok
    finally:
        tmp_path.chmod(0o700)


def test_lock_held_elsewhere_surfaces_a_clear_timeout(tmp_path: Path) -> None:
    strict = JsonFileStore(tmp_path, lock_timeout=0.05, degrade=False)
    store = JsonFileStore(tmp_path, lock_timeout=0.05)
    other = filelock.FileLock(tmp_path / "state.json.lock")
    with other:
        with pytest.raises(StoreLockTimeoutError, match="stayed locked by another process"):
            strict.update("state", _incr)
        assert store.update("state", _incr)[0] == {"n": 1}  # a bot: kept in memory, loudly
        assert "stayed locked" in next(iter(store.health().degraded.values()))
    store.update("state", _incr)  # replayed once the lock is free
    assert JsonFileStore(tmp_path).read("state") == {"n": 2}


def test_append_survives_a_torn_last_line(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.append("audit", {"i": 1})
    with open(tmp_path / "audit.jsonl", "a") as handle:
        handle.write('{"i": 2, "tor')  # a crash mid-write
    store.append("audit", {"i": 3})
    assert [r["i"] for r in store.read_lines("audit")] == [1, 3]
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_keys_named_like_secrets_are_written_verbatim(tmp_path: Path) -> None:
    # the store never rewrites what it is given: masking happens where text enters
    store = JsonFileStore(tmp_path)
    store.add_secrets(["sk-live-0123456789"])
    store.update("state", lambda d: d.update(SIG={"count": 1}, TOKEN={"free": 2.0}))
    store.append("audit", {"symbol": "AUTH", "PWD": 1})
    again = JsonFileStore(tmp_path)
    assert again.read("state") == {"SIG": {"count": 1}, "TOKEN": {"free": 2.0}}
    assert again.read_lines("audit") == [{"symbol": "AUTH", "PWD": 1}]


def _hammer(data_dir: str, count: int) -> None:
    store = JsonFileStore(data_dir)
    for _ in range(count):
        store.update("state", _incr)


def test_two_processes_lose_no_update(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), 100)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert JsonFileStore(tmp_path).read("state") == {"n": 200}


def test_memory_store_has_the_same_interface() -> None:
    store = MemoryStore()
    assert store.update("s", _incr) == ({"n": 1}, 1)
    assert store.read("s") == {"n": 1} and store.version("s") == 1
    store.append("a", {"x": 1})
    assert store.read_lines("a") == [{"x": 1}] and store.health().ok


def test_an_unfreeze_kept_in_memory_is_not_replayed_over_a_later_freeze(tmp_path: Path) -> None:
    from broker_guard.symbol_freeze_manager import SymbolFreezeManager

    bot = SymbolFreezeManager(store=JsonFileStore(tmp_path, lock_timeout=0.05), refresh_interval=0)
    operator = SymbolFreezeManager(store=JsonFileStore(tmp_path))
    operator.freeze("SIG-USD", "first review")
    assert bot.is_frozen("SIG-USD")
    with filelock.FileLock(tmp_path / "symbol_freeze.json.lock"):
        assert bot.unfreeze_symbol("SIG-USD", "reviewed")  # the lock is busy: kept in memory
    operator.freeze("SIG-USD", "delisted: frozen after the unfreeze returned")
    bot.record_price_fetch_failure("ETH-USD", "symbol not found")  # writes what waits
    assert "SIG/USD" in JsonFileStore(tmp_path).read("symbol_freeze")["frozen"]


def test_a_short_write_on_a_full_disk_is_never_acknowledged_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    real_write = os.write
    calls = []

    def nearly_full(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return int(real_write(fd, bytes(data)[:7]))  # part of the line, no error yet
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("broker_guard.state.files.os.write", nearly_full)
    assert store.update("state", _incr)[0] == {"n": 2}  # kept in memory, loudly
    assert not store.health().ok
    monkeypatch.setattr("broker_guard.state.files.os.write", real_write)
    store.update("state", _incr)  # the disk has room again: everything written, once
    assert JsonFileStore(tmp_path).read("state") == {"n": 3}


def test_a_failed_fsync_keeps_the_line_readers_may_have_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = JsonFileStore(tmp_path), JsonFileStore(tmp_path)
    writer.update("state", _incr)
    real_fsync = os.fsync
    written = []

    def failing_fsync(fd: int) -> None:
        written.append(reader.read("state"))  # another process reads between write and fsync
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("broker_guard.state.files.os.fsync", failing_fsync)
    writer.update("state", _incr)
    monkeypatch.setattr("broker_guard.state.files.os.fsync", real_fsync)
    assert written == [{"n": 2}] and not writer.health().ok
    writer.update("state", _incr)
    JsonFileStore(tmp_path).update("state", _incr)
    assert reader.read("state") == JsonFileStore(tmp_path).read("state") == {"n": 4}


def test_symbols_from_undecodable_bytes_and_an_empty_compaction_are_stored(
    tmp_path: Path,
) -> None:
    store = JsonFileStore(tmp_path)
    store.compact("empty")  # nothing yet: the new journal's first line has sequence 0
    assert JsonFileStore(tmp_path).read("empty") == {} and JsonFileStore(tmp_path).health().ok
    odd = os.fsdecode(b"SIG\xff-USD")  # a lone surrogate, as argv or the environment give it
    store.update("s", lambda d: d.update(frozen={odd: {"n": 1}}), keys=[("frozen", odd)])
    assert JsonFileStore(tmp_path).read("s") == {"frozen": {odd: {"n": 1}}}


def test_a_lost_snapshot_is_rebuilt_and_nothing_is_released(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path, compact_in_background=False)
    store.update("s", lambda d: d.update(frozen={"OLD": {"n": 1}}), keys=[("frozen", "OLD")])
    store.compact("s")
    store.update("s", lambda d: d.update(frozen={"MID": {"n": 2}}), keys=[("frozen", "MID")])
    store.compact("s")
    store.update("s", lambda d: d.update(frozen={"NEW": {"n": 3}}), keys=[("frozen", "NEW")])
    (tmp_path / "s.snapshot.json").unlink()  # lost by the file system, or a careless cleanup
    assert set(JsonFileStore(tmp_path).read("s")["frozen"]) == {"OLD", "MID", "NEW"}
    (tmp_path / "s.snapshot.json").unlink()
    (tmp_path / "s.snapshot.json.prev").unlink()  # and nothing to rebuild it from
    with pytest.raises(StoreError, match="cannot be read"):
        JsonFileStore(tmp_path).read("s")


def test_a_damaged_first_snapshot_is_rebuilt_from_the_migrated_document(tmp_path: Path) -> None:
    doc = {"schema_version": 1, "data": {"frozen": {"OLD": {"n": 1}}}}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    JsonFileStore(tmp_path).update("s", lambda d: d["frozen"].update(NEW={"n": 2}))
    (tmp_path / "s.snapshot.json").write_text("garbage")
    assert set(JsonFileStore(tmp_path).read("s")["frozen"]) == {"OLD", "NEW"}


def test_a_reader_never_waits_behind_a_writer_waiting_for_another_process(
    tmp_path: Path,
) -> None:
    """A bot's balance thread writing while a stopped CLI holds the lock must not stall the
    trading thread's state reads (they held the same thread lock for the whole wait)."""
    import threading

    store = JsonFileStore(tmp_path, lock_timeout=60, degrade=False)
    store.update("state", _incr)
    cursor, _ = store.load("state")
    other = filelock.FileLock(tmp_path / "state.json.lock")
    other.acquire()
    writing = threading.Thread(target=lambda: store.update("state", _incr), daemon=True)
    writing.start()
    try:
        done = threading.Event()

        def read() -> None:
            store.load("state")
            store.changes("state", cursor)
            done.set()

        for _ in range(20):  # the writer is in its wait by now whatever the scheduling
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            assert done.wait(10), "a read waited for the writer's lock"
            done.clear()
        assert writing.is_alive()  # still waiting for the other process
    finally:
        other.release()
    writing.join(10)
    assert store.read("state") == {"n": 2}


def test_a_trading_write_waits_out_ordinary_contention_instead_of_keeping_it_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's write holds the lock about a millisecond: a trading call's write (a
    failure count's reset) waits that out instead of going to memory, where a reset (not
    replayed) would be lost and the failures counted as consecutive."""
    import broker_guard.state.files as files

    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    other = filelock.FileLock(tmp_path / "state.json.lock")
    other.acquire()
    waits: list[float] = []

    def other_process_finishes(seconds: float) -> None:  # no real wait: the holder lets go
        waits.append(seconds)
        other.release()

    monkeypatch.setattr(files.time, "sleep", other_process_finishes)
    store.update("state", _incr, urgent=True, replay=False)
    assert waits  # it waited for the lock ...
    assert store.health().ok  # ... and wrote: nothing kept in memory, nothing reported degraded
    assert JsonFileStore(tmp_path).read("state") == {"n": 2}
