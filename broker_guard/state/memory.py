"""The store interface in memory only: for tests, and for users who want no files."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Hashable, Iterable
from typing import Any

from broker_guard.state.base import Mutation, StoreHealth, T


class MemoryStore:
    """The store interface in memory only: for tests, and for users who want no files."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._lines: dict[str, list[dict[str, Any]]] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.RLock()

    def read(self, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._docs.get(name, {}))

    def update(
        self, name: str, mutate: Mutation[T], *, replay: bool = True
    ) -> tuple[dict[str, Any], T]:
        with self._lock:
            data = copy.deepcopy(self._docs.get(name, {}))
            result = mutate(data)
            self._docs[name] = data
            self._versions[name] = self._versions.get(name, 0) + 1
            return copy.deepcopy(data), result

    def version(self, name: str) -> Hashable:
        return self._versions.get(name, 0)

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
