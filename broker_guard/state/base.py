"""The store protocol: what the guard needs from persistence, and the state document every store
writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from broker_guard.state.records import Change, RecordPath, Records

SCHEMA_VERSION = 1
MAX_PENDING = 10_000  # changes kept in memory for replay while a store is unreachable
T = TypeVar("T")
Mutation = Callable[[dict[str, Any]], T]
Cursor = tuple[int, int]  # (generation, sequence number): how far a reader has read a state


@dataclass
class StoreHealth:
    ok: bool = True
    degraded: dict[str, str] = field(default_factory=dict)  # state name -> why it lives in memory
    recovered: list[str] = field(default_factory=list)  # files restored from the last good copy
    location: str = ""
    quarantined: list[str] = field(default_factory=list)  # damaged records kept aside for review

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "degraded": dict(self.degraded),
            "recovered": list(self.recovered),
            "location": self.location,
            "quarantined": list(self.quarantined),
        }


class Store(Protocol):
    """What the guard needs from persistence; ``JsonFileStore``, ``RedisStore`` and ``MemoryStore``
    provide it.

    A state is records in sections (``records``); ``update(..., keys=[...])``
    hands ``mutate`` only those records, so one change costs the same whatever
    the state's size, and ``changes(name, cursor)`` tells a reader only what
    changed since it last looked, in sequence order. ``replay=False`` marks a
    change that loosens the guard (a reset, an unfreeze): a store that keeps
    changes in memory during an outage and re-applies them later may skip it,
    since shared state can have moved on in between.
    """

    def load(self, name: str) -> tuple[Cursor, Records]: ...

    def read(self, name: str) -> Records: ...

    def changes(self, name: str, since: Cursor) -> tuple[Cursor, list[Change]] | None: ...

    def update(
        self,
        name: str,
        mutate: Mutation[T],
        *,
        keys: Iterable[RecordPath] | None = None,
        replay: bool = True,
        urgent: bool = False,
    ) -> tuple[Records, T]: ...

    def version(self, name: str) -> Hashable: ...

    def append(self, name: str, record: dict[str, Any]) -> None: ...

    def read_lines(self, name: str) -> list[dict[str, Any]]: ...

    def health(self) -> StoreHealth: ...

    def add_secrets(self, secrets: Iterable[str]) -> None: ...


def parse_document(raw: bytes | str) -> dict[str, Any]:
    """A state document (``schema_version``, ``data``, ...) as any store writes it; ``ValueError``
    when damaged."""
    return check_document(json.loads(raw))


def check_document(doc: Any) -> dict[str, Any]:
    """``doc`` when it is a state document; ``ValueError`` saying why not."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ValueError("not a broker_guard state document")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {version!r}")
    return doc
