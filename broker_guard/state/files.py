"""State in JSON files, safe for several processes and threads sharing one data directory.

Every change is a read-modify-write under a ``filelock`` lock, written to a
temporary file, fsynced and moved into place with ``os.replace``, with the
previous good copy kept beside it. A corrupt file is moved aside and the good
copy restored; an unwritable directory degrades to memory (and replays what it
did there once the disk works again) instead of breaking the trading loop.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import threading
import time
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import filelock

from broker_guard.clock import Clock, system_clock, utc_iso
from broker_guard.errors import StoreError, StoreLockTimeoutError
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state.base import (
    MAX_PENDING,
    SCHEMA_VERSION,
    Mutation,
    StoreHealth,
    T,
    parse_document,
)

log = redact_logger("broker_guard.store")


class JsonFileStore:
    """State files ``<data_dir>/<name>.json`` (+ ``.bak``, ``.lock``) and ``<name>.jsonl`` logs."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        lock_timeout: float = 10.0,
        clock: Clock = system_clock,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.lock_timeout = lock_timeout
        self._clock = clock
        self._thread_lock = threading.RLock()
        self._locks: dict[str, filelock.FileLock] = {}
        self._memory: dict[str, dict[str, Any]] = {}  # last state seen or written, per name
        self._pending: dict[str, list[Mutation[Any]]] = {}  # changes made while degraded, to replay
        self._degraded: dict[str, str] = {}
        self._recovered: list[str] = []
        self._secrets: set[str] = set()

    # -- interface ---------------------------------------------------------------------------

    def read(self, name: str) -> dict[str, Any]:
        with self._thread_lock:
            if name in self._degraded:
                return copy.deepcopy(self._memory.get(name, {}))
            try:
                with self._locked(name):
                    data = self._load(name)
            except OSError as exc:
                self._degrade(name, f"cannot read: {exc}")
                return copy.deepcopy(self._memory.get(name, {}))
            self._memory[name] = data
            return copy.deepcopy(data)

    def update(
        self, name: str, mutate: Mutation[T], *, replay: bool = True
    ) -> tuple[dict[str, Any], T]:
        """Apply ``mutate`` to the current state under the file lock and persist it.

        Returns the new state and what ``mutate`` returned. ``StoreLockTimeoutError``
        when another process holds the lock past ``lock_timeout``. Every change
        made while the disk fails is replayed (``replay`` is for shared stores:
        a file on one disk has no other writer that could move on meanwhile
        without this process seeing it on the next read).
        """
        with self._thread_lock:
            try:
                with self._locked(name):
                    data = self._load(name)
                    for pending in self._pending.get(name, []):
                        pending(data)
                    result = mutate(data)
                    self._write(name, data)
            except OSError as exc:
                return self._update_in_memory(name, mutate, f"cannot write: {exc}")
            replayed = self._pending.pop(name, None) is not None
            if self._degraded.pop(name, None) is not None or replayed:
                log.warning(
                    "state %s is on disk again at %s; changes made in memory were replayed",
                    name,
                    self.data_dir,
                )
            self._memory[name] = data
            return copy.deepcopy(data), result

    def version(self, name: str) -> Hashable:
        """A cheap token that changes whenever the file does: one ``stat``."""
        try:
            st = os.stat(self._path(name))
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line, under the lock, fsynced: a crash leaves at most a torn last
        line."""
        line = json.dumps(record, default=str, sort_keys=True)
        path = self.data_dir / f"{name}.jsonl"
        with self._thread_lock:
            try:
                with self._locked(name):
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    try:
                        size = os.fstat(fd).st_size
                        prefix = b"" if size == 0 or _ends_with_newline(path, size) else b"\n"
                        os.write(fd, prefix + line.encode("utf-8") + b"\n")
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as exc:
                self._degrade(name, f"cannot append: {exc}")
                self._memory.setdefault(name, {}).setdefault("lines", []).append(json.loads(line))
                raise StoreError(f"audit record not written to {path}: {exc}", cause=exc) from exc

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        """Every complete JSON line; a torn line left by a crash is skipped."""
        path = self.data_dir / f"{name}.jsonl"
        records: list[dict[str, Any]] = []
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        for raw in text.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(raw)
                if isinstance(value, dict):
                    records.append(value)
        return records + list(self._memory.get(name, {}).get("lines", []))

    def health(self) -> StoreHealth:
        return StoreHealth(
            ok=not self._degraded,
            degraded=dict(self._degraded),
            recovered=list(self._recovered),
            location=str(self.data_dir),
        )

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)
        register_secrets(self._secrets)

    # -- internals ---------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.data_dir / f"{name}.json"

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        lock = self._locks.get(name)
        if lock is None:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = filelock.FileLock(
                self.data_dir / f"{name}.json.lock",
                timeout=self.lock_timeout,
                mode=0o600,
                thread_local=False,
            )
            self._locks[name] = lock
        try:
            lock.acquire()
        except filelock.Timeout as exc:
            raise StoreLockTimeoutError(
                f"state {name!r} in {self.data_dir} stayed locked by another process for "
                f"{self.lock_timeout}s; "
                "check for a hung bot or CLI holding it, or raise guard.lock_timeout_seconds",
                cause=exc,
            ) from exc
        try:
            yield
        finally:
            lock.release()

    def _load(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return _parse(raw)
        except ValueError as exc:
            return self._recover(name, exc)

    def _recover(self, name: str, problem: Exception) -> dict[str, Any]:
        path = self._path(name)
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time() * 1000)}")
        os.replace(path, aside)
        bak = path.with_name(path.name + ".bak")
        try:
            data = _parse(bak.read_bytes())
            source = "the last good copy"
        except (OSError, ValueError):
            data, source = {}, "empty state (no good copy)"
        log.critical(
            "state file %s was corrupt (%s); moved to %s and restored from %s. Check the disk and "
            "whatever wrote it.",
            path,
            problem,
            aside.name,
            source,
        )
        self._recovered.append(str(path))
        self._write(name, data)
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        path = self._path(name)
        doc = {"schema_version": SCHEMA_VERSION, "updated_at": utc_iso(self._clock()), "data": data}
        payload = json.dumps(doc, sort_keys=True, indent=1, default=str).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            if path.exists():  # keep the previous good copy: a hard link costs no copy
                bak_tmp = f"{tmp}.bak"
                os.link(path, bak_tmp)
                os.replace(bak_tmp, path.with_name(path.name + ".bak"))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.data_dir)

    def _update_in_memory(
        self, name: str, mutate: Mutation[T], why: str
    ) -> tuple[dict[str, Any], T]:
        self._degrade(name, why)
        data = copy.deepcopy(self._memory.get(name, {}))
        result = mutate(data)
        pending = self._pending.setdefault(name, [])
        if len(pending) < MAX_PENDING:
            pending.append(mutate)
        self._memory[name] = data
        return copy.deepcopy(data), result

    def _degrade(self, name: str, why: str) -> None:
        why = redact(why, self._secrets)
        if name not in self._degraded:
            log.error(
                "state %s cannot use %s (%s); keeping it in memory. Trading goes on; fix the disk.",
                name,
                self.data_dir,
                why,
            )
        self._degraded[name] = why


def _parse(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = parse_document(raw)["data"]
    return data


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
