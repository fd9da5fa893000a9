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

from broker_guard import JsonFileStore, MemoryStore, StoreLockTimeoutError


def _incr(data: dict[str, Any]) -> int:
    data["n"] = data.get("n", 0) + 1
    return int(data["n"])


def test_update_persists_atomically_with_schema_and_private_mode(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "d")
    data, result = store.update("state", _incr)
    assert data == {"n": 1} and result == 1
    path = tmp_path / "d" / "state.json"
    doc = json.loads(path.read_text())
    assert (
        doc["schema_version"] == 1
        and doc["data"] == {"n": 1}
        and doc["updated_at"].endswith("+00:00")
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.update("state", _incr)
    # the previous good copy
    assert json.loads((tmp_path / "d" / "state.json.bak").read_text())["data"] == {"n": 1}
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]


def test_a_second_store_on_the_same_dir_sees_changes(tmp_path: Path) -> None:
    a, b = JsonFileStore(tmp_path), JsonFileStore(tmp_path)
    before = b.version("state")
    a.update("state", _incr)
    assert b.version("state") != before
    assert b.read("state") == {"n": 1}


def test_corrupt_file_is_moved_aside_and_last_good_copy_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    store.update("state", _incr)  # .bak holds n=1, file n=2
    (tmp_path / "state.json").write_text('{"schema_version": 1, "data": {"n": 2')  # torn write
    with caplog.at_level(logging.CRITICAL, logger="broker_guard.store"):
        assert store.read("state") == {"n": 1}
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    assert list(tmp_path.glob("state.json.corrupt-*"))
    assert store.health().recovered


def test_garbage_without_good_copy_starts_empty_but_keeps_the_garbage(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_bytes(b"\x00\xffgarbage")
    assert JsonFileStore(tmp_path).read("state") == {}
    assert next(iter(tmp_path.glob("state.json.corrupt-*"))).read_bytes() == b"\x00\xffgarbage"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_dir_degrades_to_memory_and_replays_later(tmp_path: Path) -> None:
    _read_only_roundtrip(tmp_path)


def test_unwritable_dir_degrades_to_memory_and_replays_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path)
    store.update("state", _incr)
    real_mkstemp = __import__("tempfile").mkstemp

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("broker_guard.state.files.tempfile.mkstemp", full_disk)
    data, _ = store.update("state", _incr)
    assert data == {"n": 2}  # the caller goes on
    assert not store.health().ok and "No space" in next(iter(store.health().degraded.values()))
    # disk copy untouched
    assert json.loads((tmp_path / "state.json").read_text())["data"] == {"n": 1}
    monkeypatch.setattr("broker_guard.state.files.tempfile.mkstemp", real_mkstemp)
    data, _ = store.update("state", _incr)
    assert data == {"n": 3}  # the change made in memory was replayed onto disk
    assert json.loads((tmp_path / "state.json").read_text())["data"] == {"n": 3}
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
    store = JsonFileStore(tmp_path, lock_timeout=0.05)
    other = filelock.FileLock(tmp_path / "state.json.lock")
    with other, pytest.raises(StoreLockTimeoutError, match="stayed locked by another process"):
        store.update("state", _incr)


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
