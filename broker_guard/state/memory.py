"""The store interface in memory only: for tests, and for users who want no files."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Hashable, Iterable
from typing import Any

from broker_guard.state import records
from broker_guard.state.base import Cursor, Mutation, StoreHealth, T
from broker_guard.state.records import Change, ChangeLog, RecordPath, Records


class MemoryStore:
    """The store interface in memory only: for tests, and for users who want no files."""

    def __init__(self) -> None:
        self._records: dict[str, Records] = {}
        self._seq: dict[str, int] = {}
        self._recent: dict[str, ChangeLog] = {}
        self._lines: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.RLock()

    def load(self, name: str) -> tuple[Cursor, Records]:
        with self._lock:
            return (0, self._seq.get(name, 0)), copy.deepcopy(self._records.get(name, {}))

    def read(self, name: str) -> Records:
        return self.load(name)[1]

    def changes(self, name: str, since: Cursor) -> tuple[Cursor, list[Change]] | None:
        with self._lock:
            seq = self._seq.get(name, 0)
            if since[0] != 0:
                return None
            if since[1] >= seq:
                return (0, seq), []
            recent = self._recent.get(name)
            newer = recent.since(since[1]) if recent is not None else None
            return None if newer is None else ((0, seq), newer)

    def update(
        self,
        name: str,
        mutate: Mutation[T],
        *,
        keys: Iterable[RecordPath] | None = None,
        replay: bool = True,
        urgent: bool = False,
    ) -> tuple[Records, T]:
        paths = None if keys is None else list(keys)
        with self._lock:
            state = self._records.setdefault(name, {})
            doc, result, changes = records.run(state, paths, mutate)
            if changes:
                seq = self._seq[name] = self._seq.get(name, 0) + 1
                recent = self._recent.setdefault(name, ChangeLog())
                for path, value in changes:
                    records.apply(state, path, copy.deepcopy(value))
                    recent.add(seq, path, value)
            return doc, result

    def version(self, name: str) -> Hashable:
        return self._seq.get(name, 0)

    def append(self, name: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._lines.setdefault(name, []).append(json.loads(json.dumps(record, default=str)))

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._lines.get(name, []))

    def health(self) -> StoreHealth:
        return StoreHealth(location="memory")

    def add_secrets(self, secrets: Iterable[str]) -> None:
        return None
