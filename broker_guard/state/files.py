"""State in files: an append-only journal per state, with compacted snapshots, shared by every
process on one data directory.

``<name>.journal`` holds one self-checking JSON line per change (``journal``),
appended under the state's ``filelock`` lock and fsynced before the change is
acknowledged. ``<name>.snapshot.json`` holds every record as of a sequence
number; compaction writes a new one from the records and starts an empty
journal, keeping the previous pair (``.prev``) so a damaged snapshot is rebuilt
from it. A reader applies only the lines it has not seen, without the lock.
A data directory written by 0.1 (``<name>.json`` documents) is migrated on first
open. An unwritable disk keeps changes in memory and replays them later.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import errno
import json
import os
import threading
import time
import zlib
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from broker_guard.clock import Clock, system_clock, utc_iso
from broker_guard.errors import StoreError, StoreLockTimeoutError
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state import journal, records
from broker_guard.state.base import MAX_PENDING, Cursor, Mutation, StoreHealth, T, check_document
from broker_guard.state.records import Change, ChangeLog, RecordPath, Records

log = redact_logger("broker_guard.store")

SNAPSHOT_VERSION = 2
# the longest a trading call's write waits for another process's lock (held about a millisecond
# per write): short enough that a stopped process never stalls trading, long enough that
# ordinary contention is never mistaken for a failing disk and a count reset is not lost
URGENT_WAIT = 0.05
LOCK_POLL = 0.005  # how often a writer waiting for another process tries the lock again
FLUSH_INTERVAL = 0.5  # how often a background writer retries a busy lock
_OPEN_FLAGS = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class _Journal:
    """What this process knows of one state: its records as of ``seq``, and where it read to."""

    records: Records = field(default_factory=dict)
    seq: int = 0
    generation: int = 0  # bumped when ``recent`` no longer continues what readers saw
    ino: int | None = None
    offset: int = 0  # bytes of the journal applied
    fd: int | None = None  # the journal read, kept open to drain it if a compaction replaces it
    lines: int = 0  # lines in the current journal: compaction is due after enough of them
    recent: ChangeLog = field(default_factory=ChangeLog)
    loaded: bool = False
    # changes kept in memory: (paths, mutate, replay); replay=False ones are not written later
    pending: list[tuple[list[RecordPath] | None, Mutation[Any], bool]] = field(default_factory=list)
    behind: bool = False  # a new journal starts after changes this process never read
    unsynced: str | None = None  # the last line was written but its fsync failed
    base: int = 0  # the sequence number the current journal starts after
    bad_offsets: set[tuple[int, int]] = field(default_factory=set)


class JsonFileStore:
    """Journals and snapshots ``<data_dir>/<name>.journal``, ``.snapshot.json`` (+ ``.lock``), and
    ``<name>.jsonl`` append-only logs."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        lock_timeout: float = 10.0,
        clock: Clock = system_clock,
        compact_after: int = 1000,
        compact_in_background: bool = True,
        degrade: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.lock_timeout = lock_timeout
        self.compact_after = compact_after
        self._background = compact_in_background
        self._degrade_allowed = degrade
        self._clock = clock
        self._thread_lock = threading.RLock()
        self._locks: dict[str, filelock.FileLock] = {}
        self._states: dict[str, _Journal] = {}
        self._degraded: dict[str, str] = {}
        self._recovered: list[str] = []
        self._quarantined: list[str] = []
        self._compacting: set[str] = set()
        self._flushing: set[str] = set()
        self._at_exit = False
        self._closed = threading.Event()
        self._secrets: set[str] = set()
        self._lines: dict[str, list[dict[str, Any]]] = {}  # log records the disk did not take

    # -- reading -----------------------------------------------------------------------------

    def load(self, name: str) -> tuple[Cursor, Records]:
        """Every record of ``name`` and the cursor it is as of; ``StoreError`` when unreadable."""
        with self._thread_lock:
            state = self._synced(name)
            return (state.generation, state.seq), copy.deepcopy(state.records)

    def read(self, name: str) -> Records:
        return self.load(name)[1]

    def changes(self, name: str, since: Cursor) -> tuple[Cursor, list[Change]] | None:
        """The changes after ``since`` (lines other processes appended are read first), or None
        when ``since`` is too old to continue from: ``load`` again."""
        with self._thread_lock:
            state = self._synced(name)
            generation, seq = since
            if generation != state.generation:
                return None
            if seq >= state.seq:
                return (generation, state.seq), []
            newer = state.recent.since(seq)
            return None if newer is None else ((generation, state.seq), newer)

    def version(self, name: str) -> Hashable:
        """A token that changes whenever the state does (after reading what others appended)."""
        with self._thread_lock:
            state = self._synced(name)
            return (state.generation, state.seq)

    # -- writing -----------------------------------------------------------------------------

    def update(
        self,
        name: str,
        mutate: Mutation[T],
        *,
        keys: Iterable[RecordPath] | None = None,
        replay: bool = True,
        urgent: bool = False,
    ) -> tuple[Records, T]:
        """Apply ``mutate`` under the state's lock and append what it changed as one journal line.

        With ``keys`` ``mutate`` is handed those records only (shaped like the whole state) and
        the change costs the same whatever the state's size; without, the whole state. Returns
        what ``mutate`` saw and changed, and its result. ``StoreLockTimeoutError`` when another
        process holds the lock past ``lock_timeout``. While the disk fails or the lock is busy the
        change applies in memory and is written later, except ``replay=False`` ones (a reset, an
        unfreeze): another process may have frozen again meanwhile. ``urgent`` (the trading path)
        waits at most ``URGENT_WAIT`` for another process's lock; past it the change is kept
        in memory and written by the next call, a background writer, or at exit. A writer that
        waits does so with the thread lock released, so reads never queue behind it.
        """
        paths = None if keys is None else list(keys)
        wait = URGENT_WAIT if urgent else None
        try:
            with self._exclusive(name, wait):
                state = self._written_pending(name)
                doc, result = self._apply(name, state, paths, mutate, durable=True)
                self._written(name, state)
                return doc, result
        except OSError as exc:
            if not self._degrade_allowed:
                raise StoreError(f"state {name!r} not saved: {exc}", cause=exc) from exc
            with self._thread_lock:
                return self._update_in_memory(name, paths, mutate, f"cannot write: {exc}", replay)
        except StoreError as exc:  # unreadable, or locked past the timeout: kept, replayed
            if not self._degrade_allowed:
                raise
            with self._thread_lock:
                doc, result = self._update_in_memory(name, paths, mutate, str(exc), replay)
                self._flush_soon(name)
            return doc, result

    def _written(self, name: str, state: _Journal) -> None:
        if state.unsynced is not None:
            self._degrade(name, state.unsynced)
            state.unsynced = None
        else:
            self._back_on_disk(name)
        if state.lines >= max(self.compact_after, len(state.records)):
            self._compact_soon(name)

    def compact(self, name: str) -> None:
        """Write a snapshot of every record and start an empty journal (the previous pair kept)."""
        with self._exclusive(name):
            state = self._synced(name, locked=True)
            if not state.pending:
                self._write_snapshot(name, state)

    # -- append-only logs --------------------------------------------------------------------

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line, under the lock, fsynced, never through a symlink; ``StoreError``
        when it was not written (the caller must not act as if it were)."""
        line = json.dumps(record, default=str, sort_keys=True)
        path = self.data_dir / f"{name}.jsonl"
        try:
            with self._exclusive(name):
                _append_line(path, line.encode("utf-8"))
        except OSError as exc:
            with self._thread_lock:
                self._degrade(name, f"cannot append: {exc}")
                self._lines.setdefault(name, []).append(json.loads(line))
            raise StoreError(f"record not written to {path}: {exc}", cause=exc) from exc

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        """Every complete JSON line (a torn line left by a crash is skipped), then any the disk did
        not take."""
        path = self.data_dir / f"{name}.jsonl"
        found: list[dict[str, Any]] = []
        try:
            text = _read_file(path)[1]
        except FileNotFoundError:
            text = b""
        for raw in text.splitlines():
            with contextlib.suppress(ValueError):
                value = journal.loads(raw)
                if isinstance(value, dict):
                    found.append(value)
        return found + list(self._lines.get(name, []))

    def health(self) -> StoreHealth:
        return StoreHealth(
            ok=not self._degraded and not self._quarantined,
            degraded=dict(self._degraded),
            recovered=list(self._recovered),
            location=str(self.data_dir),
            quarantined=list(self._quarantined),
        )

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)
        register_secrets(self._secrets)

    # -- the journal -------------------------------------------------------------------------

    def _path(self, name: str, suffix: str) -> Path:
        return self.data_dir / f"{name}{suffix}"

    def _synced(self, name: str, *, locked: bool = False) -> _Journal:
        """This process's copy of ``name`` with every line appended since applied."""
        state = self._states.setdefault(name, _Journal())
        try:
            if state.pending and not locked and self._moved(name, state):
                self._reload_keeping_pending(name, state)
            elif not state.loaded:
                self._load(name, state, locked=locked)
            else:
                self._follow(name, state, locked=locked)
            if locked:
                self._cut_torn_tail(name, state)
        except OSError as exc:
            self._degrade(name, f"cannot read: {exc}")
            raise StoreError(
                f"state {name!r} in {self.data_dir} cannot be read ({exc}); fix the permissions "
                "or the disk: entries stay refused until it can",
                cause=exc,
            ) from exc
        return state

    def _moved(self, name: str, state: _Journal) -> bool:
        if not state.loaded or state.fd is None:
            return True
        ino = _inode(self._path(name, ".journal"))
        return ino != state.ino or os.fstat(state.fd).st_size != state.offset

    def _reload_keeping_pending(self, name: str, state: _Journal) -> None:
        """Changes kept in memory sit on top of the disk: read the disk again, re-apply them."""
        self._load(name, state, locked=False)
        for paths, mutate, _replay in state.pending:
            self._apply(name, state, paths, mutate, durable=False)

    def _load(self, name: str, state: _Journal, *, locked: bool) -> None:
        """Read the snapshot, then the journal after it. A damaged snapshot or a 0.1 document is
        dealt with under the lock; a compaction racing a lockless read makes it read again."""
        for _attempt in range(20):
            try:
                ino, seq, found = self._read_snapshot(name, ".snapshot.json")
            except journal.BadLine as exc:
                if not locked:
                    with self._locked(name):
                        return self._load(name, state, locked=True)
                ino, (seq, found) = None, self._rebuild(name, exc)
            if seq == 0 and not found and self._needs_migration(name):
                if not locked:
                    with self._locked(name):
                        return self._load(name, state, locked=True)
                seq, found = self._migrate(name)
            state.records, state.seq, state.loaded, state.behind = found, seq, True, False
            state.generation += 1
            state.recent.restart(seq)
            self._open_journal(name, state)
            if locked and state.behind:  # the journal starts after the snapshot: it was lost
                self._restore_lost_snapshot(name, state)
                return None
            if locked or (_inode(self._path(name, ".snapshot.json")) == ino and not state.behind):
                return None
        with self._locked(name):
            return self._load(name, state, locked=True)

    def _restore_lost_snapshot(self, name: str, state: _Journal) -> None:
        base = state.base
        seq, found = self._rebuild(name, journal.BadLine(f"the journal starts at {base}"))
        if seq < base:
            state.loaded = False
            raise _StateLost(
                errno.EIO,
                f"state {name!r}: its snapshot is missing and nothing rebuilds it up to sequence "
                f"{base}; restore {name}.snapshot.json from a backup",
            )
        state.records, state.seq, state.behind = found, seq, False
        state.generation += 1
        state.recent.restart(seq)
        self._open_journal(name, state)

    def _needs_migration(self, name: str) -> bool:
        return not self._path(name, ".journal").exists() and (
            self._path(name, ".json").exists() or self._path(name, ".json.bak").exists()
        )

    def _read_snapshot(self, name: str, suffix: str) -> tuple[int | None, int, Records]:
        """The snapshot's inode, sequence number and records (none yet: 0 and empty)."""
        try:
            ino, raw = _read_file(self._path(name, suffix))
        except FileNotFoundError:
            return None, 0, {}
        doc = journal.loads(raw)
        ok = isinstance(doc, dict) and doc.get("schema_version") == SNAPSHOT_VERSION
        seq = doc.get("seq") if ok else None
        if not ok or type(seq) is not int or seq < 0 or not isinstance(doc.get("records"), dict):
            raise journal.BadLine(f"{suffix} is not a broker_guard snapshot")
        return ino, seq, doc["records"]

    def _open_journal(self, name: str, state: _Journal) -> None:
        try:
            fd = os.open(self._path(name, ".journal"), os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            fd = -1
        if state.fd is not None:
            os.close(state.fd)
        state.fd, state.offset, state.lines = (fd if fd >= 0 else None), 0, 0
        state.ino = os.fstat(fd).st_ino if fd >= 0 else None
        if state.fd is not None:
            self._drain(name, state)

    def _follow(self, name: str, state: _Journal, *, locked: bool) -> None:
        """Apply what was appended; after a compaction replaced the journal, finish the old file
        (still open) first, and start over when more than one compaction went by."""
        ino = _inode(self._path(name, ".journal"))
        if ino is not None and ino == state.ino:
            assert state.fd is not None
            if os.fstat(state.fd).st_size != state.offset:
                self._drain(name, state)
        elif ino is not None or state.fd is not None:
            if state.fd is not None:
                self._drain(name, state)
            self._open_journal(name, state)
        if state.behind:
            self._load(name, state, locked=locked)

    def _drain(self, name: str, state: _Journal) -> None:
        """Apply every complete line after ``state.offset`` (a line still being written waits)."""
        assert state.fd is not None
        size = os.fstat(state.fd).st_size
        data = os.pread(state.fd, size - state.offset, state.offset) if size > state.offset else b""
        for raw in data[: data.rfind(b"\n") + 1].splitlines():
            self._apply_line(name, state, raw)
            state.offset += len(raw) + 1

    def _cut_torn_tail(self, name: str, state: _Journal) -> None:
        """Under the lock, bytes after the last complete line are a killed writer's unacknowledged
        change: cut them so the next line starts clean."""
        if state.fd is None or os.fstat(state.fd).st_size <= state.offset:
            return
        fd = os.open(self._path(name, ".journal"), os.O_WRONLY | _OPEN_FLAGS)
        try:
            os.ftruncate(fd, state.offset)
        finally:
            os.close(fd)
        log.warning("state %s: cut a torn last line a killed writer left", name)

    def _apply_line(self, name: str, state: _Journal, raw: bytes) -> None:
        try:
            entry = journal.decode(raw)
        except journal.BadLine as exc:
            self._quarantine(name, state, raw, exc)
            return
        state.lines += 1
        if not entry.changes:  # a new journal's first line: the snapshot's sequence number
            state.base = entry.seq
            state.behind = state.behind or entry.seq > state.seq
            return
        if entry.seq <= state.seq:
            return  # already in the snapshot
        for path, value in entry.changes:
            records.apply(state.records, path, value)
            state.recent.add(entry.seq, path, value)
        state.seq = entry.seq

    def _quarantine(self, name: str, state: _Journal, raw: bytes, problem: Exception) -> None:
        """A damaged line: kept aside for review, loud, and every record it names marked so the
        symbols stay blocked (a fault never releases a freeze)."""
        what = f"{name}.journal at byte {state.offset}"
        named = _paths_named(raw) or [(records.UNATTRIBUTED, f"{what} crc {zlib.crc32(raw):08x}")]
        mark = {"quarantined": f"damaged journal line: {problem}"}
        for path in named:  # on every read of the line; not on disk: readers load everything
            records.apply(state.records, path, mark)
        state.generation += 1
        where = (state.ino or 0, state.offset)
        if where in state.bad_offsets:
            return  # copied aside and reported once
        state.bad_offsets.add(where)
        aside = self._path(name, ".quarantine.jsonl")
        with contextlib.suppress(OSError):
            _append_line(aside, raw.replace(b"\n", b" "))
        self._quarantined.append(f"{what}: {problem}")
        log.critical(
            "state %s: a damaged journal line (%s) was copied to %s; %s. Check the disk and "
            "whatever wrote it.",
            what,
            problem,
            aside.name,
            f"records it names {[list(p) for p in named]} are kept blocked for review"
            if named[0][0] != records.UNATTRIBUTED
            else "it names no record: entries on every symbol are refused until an operator has "
            "reviewed it (`broker-guard acknowledge-damage`)",
        )

    def _apply(
        self,
        name: str,
        state: _Journal,
        paths: list[RecordPath] | None,
        mutate: Mutation[T],
        *,
        durable: bool,
    ) -> tuple[Records, T]:
        doc, result, changes = records.run(state.records, paths, mutate)
        if changes:
            seq = state.seq + 1
            if durable:
                self._write_line(name, state, journal.encode(seq, changes))
            for path, value in changes:
                records.apply(state.records, path, copy.deepcopy(value))
                state.recent.add(seq, path, value)
            state.seq = seq
        return doc, result

    def _write_line(self, name: str, state: _Journal, line: bytes) -> None:
        """Append one line to the journal under the lock, fsynced: then the change is made."""
        path = self._path(name, ".journal")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, 0o600)
        try:
            try:
                _write_all(fd, line)
            except OSError:  # no newline was written: no reader applied it; take it back
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, state.offset if state.fd is not None else 0)
                raise
            try:
                os.fsync(fd)
            except OSError as exc:  # readers may have applied it already: it stays, loudly
                state.unsynced = f"fsync failed, the change may not survive a power loss: {exc}"
        finally:
            os.close(fd)
        if state.fd is None:  # this created the journal: follow it from after this line
            state.fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
            state.ino, state.offset, state.lines = os.fstat(state.fd).st_ino, 0, 0
            _fsync_dir(self.data_dir)
        state.offset += len(line)
        state.lines += 1

    # -- compaction, recovery, migration ---------------------------------------------------

    def _compact_soon(self, name: str) -> None:
        if name in self._compacting:
            return
        self._compacting.add(name)
        if not self._background:
            self._compact_quietly(name)
            return
        threading.Thread(target=self._compact_quietly, args=(name,), daemon=True).start()

    def _compact_quietly(self, name: str) -> None:
        try:
            self.compact(name)
        except (OSError, StoreError) as exc:
            log.warning("state %s not compacted (%s); the journal keeps every change", name, exc)
        finally:
            self._compacting.discard(name)

    def _write_snapshot(self, name: str, state: _Journal) -> None:
        """Snapshot, keep the previous pair, start an empty journal; readers holding the old
        journal open finish it first."""
        payload = _snapshot_bytes(state.seq, state.records, self._clock())
        snapshot, current = self._path(name, ".snapshot.json"), self._path(name, ".journal")
        with contextlib.suppress(FileNotFoundError):  # a copy: never one inode with the snapshot
            _write_replace(self._path(name, ".snapshot.json.prev"), _read_file(snapshot)[1])
        _link_replace(current, self._path(name, ".journal.prev"))
        _write_replace(snapshot, payload)
        _write_replace(current, journal.encode(state.seq, []))
        _fsync_dir(self.data_dir)
        self._open_journal(name, state)

    def _rebuild(self, name: str, problem: Exception) -> tuple[int, Records]:
        """The snapshot is damaged or missing: rebuild it from the previous pair (or, for the first
        snapshot, the migrated 0.1 document), then move the bad one aside. ``_StateLost`` when
        nothing reaches the journal's start: then the state cannot be confirmed."""
        seq, found, source = self._previous_state(name)
        prev = _Journal(records=found, seq=seq, loaded=True)
        with contextlib.suppress(FileNotFoundError):
            for raw in _read_file(self._path(name, ".journal.prev"))[1].splitlines():
                self._apply_line(name, prev, raw)
        if prev.behind:  # the previous journal starts after what rebuilt it: a gap
            raise _StateLost(
                errno.EIO,
                f"state {name!r}: its snapshot is damaged or missing and the previous one does not "
                f"reach the previous journal; restore {name}.snapshot.json from a backup",
            )
        snapshot = self._path(name, ".snapshot.json")
        aside = snapshot.with_name(f"{snapshot.name}.corrupt-{_stamp()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(snapshot, aside)
        log.critical(
            "state snapshot %s was damaged or missing (%s); moved to %s and rebuilt from %s, "
            "then the journal. Check the disk and whatever wrote it.",
            snapshot,
            problem,
            aside.name,
            source,
        )
        self._recovered.append(str(snapshot))
        _write_replace(snapshot, _snapshot_bytes(prev.seq, prev.records, self._clock()))
        return prev.seq, prev.records

    def _previous_state(self, name: str) -> tuple[int, Records, str]:
        try:
            _ino, seq, found = self._read_snapshot(name, ".snapshot.json.prev")
            if _ino is not None:
                return seq, found, "the previous snapshot and journal"
        except journal.BadLine:
            pass
        migrated = self._path(name, ".json.v1-migrated")
        try:
            data = check_document(journal.loads(_read_file(migrated)[1]))["data"]
            return 1, dict(data), f"{migrated.name} (the migrated 0.1 document)"
        except (FileNotFoundError, ValueError):
            return 0, {}, "nothing (no good previous snapshot)"

    def _migrate(self, name: str) -> tuple[int, Records]:
        """A 0.1 ``<name>.json`` document (or its ``.bak``) becomes the first snapshot."""
        legacy = self._path(name, ".json")
        found: Records | None = None
        for candidate in (legacy, self._path(name, ".json.bak")):
            try:
                found = dict(check_document(journal.loads(_read_file(candidate)[1]))["data"])
                break
            except FileNotFoundError:
                continue
            except (ValueError, TypeError) as exc:
                log.critical("0.1 state file %s is damaged (%s); not migrated", candidate, exc)
                self._quarantined.append(f"{candidate.name}: {exc}")
        if found is None:
            return 0, {}
        seq = 1
        _write_replace(
            self._path(name, ".snapshot.json"), _snapshot_bytes(seq, found, self._clock())
        )
        for old in (legacy, self._path(name, ".json.bak")):
            with contextlib.suppress(FileNotFoundError):
                os.replace(old, old.with_name(old.name + ".v1-migrated"))
        log.warning("state %s migrated from the 0.1 document format to a journal", name)
        return seq, found

    # -- degraded: changes in memory -------------------------------------------------------

    def _update_in_memory(
        self,
        name: str,
        paths: list[RecordPath] | None,
        mutate: Mutation[T],
        why: str,
        replay: bool,
    ) -> tuple[Records, T]:
        self._degrade(name, why)
        state = self._states.setdefault(name, _Journal())
        if not state.loaded:  # start from what the disk says, if it can still be read
            with contextlib.suppress(StoreError):
                self._synced(name)
            state.loaded = True
        doc, result = self._apply(name, state, paths, mutate, durable=False)
        if len(state.pending) < MAX_PENDING:
            state.pending.append((paths, mutate, replay))
        else:
            log.critical(
                "state %s: %d changes already wait in memory; this one applies in this process "
                "only and will not reach the disk",
                name,
                MAX_PENDING,
            )
        return doc, result

    def _written_pending(self, name: str) -> _Journal:
        """Under the lock: the state as on disk, with the changes kept in memory written on top
        (memory moved on by itself, so it starts again from the disk)."""
        state = self._states.setdefault(name, _Journal())
        if state.pending:
            state.loaded = False
        state = self._synced(name, locked=True)
        self._replay(name, state)
        return state

    def _replay(self, name: str, state: _Journal) -> None:
        """Changes made in memory while the disk failed, applied again on the state now on disk."""
        if not state.pending:
            return
        pending, state.pending = state.pending, []
        skipped = 0
        for done, (paths, mutate, replay) in enumerate(pending):
            if not replay:  # a reset or unfreeze: the shared state may have moved on since
                skipped += 1
                continue
            try:
                self._apply(name, state, paths, mutate, durable=True)
            except OSError:  # still failing: what is not on disk stays in memory, and pending
                state.pending = pending[done:]
                for later_paths, later, _replay in state.pending:
                    self._apply(name, state, later_paths, later, durable=False)
                raise
        log.warning(
            "state %s is on disk again; %d change(s) replayed, %d reset(s) or unfreeze(s) not "
            "(the shared state may have moved on: repeat them if still wanted)",
            name,
            len(pending) - skipped,
            skipped,
        )

    def _back_on_disk(self, name: str) -> None:
        if self._degraded.pop(name, None) is not None:
            log.warning("state %s is on disk again at %s", name, self.data_dir)

    def _degrade(self, name: str, why: str) -> None:
        why = redact(why, self._secrets)
        if name not in self._degraded:
            log.error(
                "state %s cannot use %s (%s); keeping changes in memory. Fix the disk.",
                name,
                self.data_dir,
                why,
            )
        self._degraded[name] = why

    # -- the lock ----------------------------------------------------------------------------

    def _flush_soon(self, name: str) -> None:
        """A background writer that puts changes kept in memory on disk once the lock is free."""
        if name in self._flushing:
            return
        if not self._flushing and not self._at_exit:
            self._at_exit = True
            atexit.register(self.flush)
        self._flushing.add(name)
        threading.Thread(target=self._flush, args=(name,), daemon=True).start()

    def _flush(self, name: str) -> None:
        try:
            while not self._closed.wait(FLUSH_INTERVAL):
                with self._thread_lock:
                    state = self._states.get(name)
                    if state is None or not state.pending:
                        return
                    with contextlib.suppress(StoreError, OSError), self._locked(name, 0.0):
                        self._written_pending(name)
                        self._back_on_disk(name)
        finally:
            self._flushing.discard(name)

    def flush(self) -> None:
        """Write every change kept in memory, waiting for the lock up to ``lock_timeout`` (at
        exit, and on ``close``): a change is never dropped because the process ended."""
        with self._thread_lock:
            for name, state in list(self._states.items()):
                if not state.pending:
                    continue
                try:
                    with self._locked(name):
                        self._written_pending(name)
                        self._back_on_disk(name)
                except (StoreError, OSError) as exc:
                    log.critical(
                        "state %s: %d change(s) kept in memory could not be written (%s)",
                        name,
                        len(state.pending),
                        exc,
                    )

    def close(self) -> None:
        """Write what is kept in memory and stop background writers."""
        self.flush()
        self._closed.set()

    @contextlib.contextmanager
    def _exclusive(self, name: str, wait: float | None = None) -> Iterator[None]:
        """This process's thread lock and the state's file lock, together. The wait for another
        process's lock happens with the thread lock released, so a trading call reading the
        state in another thread never waits behind a writer waiting for that process."""
        timeout = self._wait(wait)
        deadline = time.monotonic() + timeout
        while True:
            self._thread_lock.acquire()
            try:
                lock, first = self._file_lock(name)
                lock.acquire(timeout=0)
                break
            except filelock.Timeout as exc:
                self._thread_lock.release()
                if time.monotonic() >= deadline:
                    raise self._lock_timeout(name, timeout, exc) from exc
            except BaseException:
                self._thread_lock.release()
                raise
            time.sleep(min(LOCK_POLL, max(0.0, deadline - time.monotonic())))
        try:
            with self._held(name, lock, first):
                yield
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def _locked(self, name: str, wait: float | None = None) -> Iterator[None]:
        """The state's file lock, for a caller already holding the thread lock."""
        lock, first = self._file_lock(name)
        timeout = self._wait(wait)
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout as exc:
            raise self._lock_timeout(name, timeout, exc) from exc
        with self._held(name, lock, first):
            yield

    @contextlib.contextmanager
    def _held(self, name: str, lock: filelock.FileLock, first: bool) -> Iterator[None]:
        """An acquired file lock, released on the way out; temp files a killed writer left are
        cleaned the first time this process takes it."""
        try:
            if first:
                _clean_temp_files(self.data_dir, name)
            yield
        finally:
            lock.release()

    def _wait(self, wait: float | None) -> float:
        """How long to wait for the file lock: ``wait``, never past ``lock_timeout``."""
        return self.lock_timeout if wait is None else min(wait, self.lock_timeout)

    def _file_lock(self, name: str) -> tuple[filelock.FileLock, bool]:
        """The state's file lock, and whether it was made just now (temp files to clean)."""
        lock = self._locks.get(name)
        if lock is not None:
            return lock, False
        make_private_dir(self.data_dir)
        lock = filelock.FileLock(
            self.data_dir / f"{name}.json.lock",  # the name 0.1 used: one lock across versions
            timeout=self.lock_timeout,
            mode=0o600,
            thread_local=False,
        )
        self._locks[name] = lock
        return lock, True

    def _lock_timeout(self, name: str, timeout: float, cause: Exception) -> StoreLockTimeoutError:
        return StoreLockTimeoutError(
            f"state {name!r} in {self.data_dir} stayed locked by another process for {timeout}s; "
            "check for a hung bot or CLI holding it, or raise guard.lock_timeout_seconds",
            cause=cause,
        )


# -- files ------------------------------------------------------------------------------------


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` and any missing parents 0700, whatever the umask."""
    missing = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            os.chmod(path, 0o700)


def _clean_temp_files(directory: Path, name: str) -> None:
    """``.tmp`` files a killed writer left (called under the state's lock: no writer is busy)."""
    with contextlib.suppress(OSError):
        for path in directory.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()


def _append_line(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, 0o600)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        _write_all(fd, (b"\n" if torn else b"") + line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a nearly full disk writes part of a buffer and
    raises only on the next call)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_file(path: Path) -> tuple[int, bytes]:
    """A file's inode and bytes, read through one descriptor, not through a symlink."""
    fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    with os.fdopen(fd, "rb") as handle:
        return os.fstat(fd).st_ino, handle.read()


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_ino
    except FileNotFoundError:
        return None


def _write_replace(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, fsync it, and move it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _link_replace(source: Path, target: Path) -> None:
    """Make ``target`` another name of ``source`` (no copy), atomically; nothing when absent."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        os.link(source, tmp, follow_symlinks=False)
    except FileNotFoundError:
        return
    os.replace(tmp, target)
    with contextlib.suppress(FileNotFoundError):  # renaming onto the same inode leaves it
        os.unlink(tmp)


class _StateLost(OSError):
    """The state on disk cannot be put back together: readers must treat it as unreadable."""


def _snapshot_bytes(seq: int, found: Records, now: float) -> bytes:
    doc = {
        "schema_version": SNAPSHOT_VERSION,
        "seq": seq,
        "written_at": utc_iso(now),
        "records": found,
    }
    return json.dumps(doc, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")


def _paths_named(raw: bytes) -> list[RecordPath]:
    """The record paths a damaged line still names, when its JSON can be read at all."""
    try:
        body = raw[raw.index(b'"seq"') - 1 :] if b'"seq"' in raw else raw
        value = journal.loads(b"{" + body[1:] if not body.startswith(b"{") else body)
        items = value.get("set", []) if isinstance(value, dict) else []
    except (ValueError, AttributeError):
        return []
    paths = []
    for item in items if isinstance(items, list) else []:
        path = item[0] if isinstance(item, list) and item and isinstance(item[0], list) else None
        if path and len(path) in (1, 2) and all(isinstance(p, str) for p in path):
            paths.append(tuple(path))
    return paths


def _stamp() -> str:
    return f"{os.getpid()}-{threading.get_ident()}-{os.urandom(3).hex()}"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
