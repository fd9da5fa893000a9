"""State as records: what one change is, how two states differ, how a change applies.

A state (``symbol_freeze``, ``balances``, ...) is a JSON object of sections
(``frozen``, ``failures``) holding records keyed by symbol or account. A change
names one record by its path (``("frozen", "SIG")``; a top-level value has a
path of one key) and carries its new value, or ``None`` when it is deleted. One
failure recorded is one or two such changes, whatever the size of the state.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

Records = dict[str, Any]
RecordPath = tuple[str, ...]  # (section, key) or (key,)
# where a store marks damage it cannot tie to any record (a damaged line whose JSON does not even
# name one): readers refuse every entry until an operator has reviewed it and deleted the mark
UNATTRIBUTED = "unattributed_damage"
T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One record set (``value``) or deleted (``value is None``) at sequence number ``seq``."""

    seq: int
    path: RecordPath
    value: Any


def select(records: Mapping[str, Any], paths: Iterable[RecordPath]) -> Records:
    """A copy of the records at ``paths`` only, shaped like the whole state: what a keyed change
    is handed (and may change)."""
    out: Records = {}
    for path in paths:
        value = lookup(records, path)
        if value is None:
            continue
        if len(path) == 1:
            out[path[0]] = copy.deepcopy(value)
        else:
            out.setdefault(path[0], {})[path[1]] = copy.deepcopy(value)
    return out


def lookup(records: Mapping[str, Any], path: RecordPath) -> Any:
    """The record at ``path``, or None."""
    value = records.get(path[0])
    if len(path) == 1:
        return value
    return value.get(path[1]) if isinstance(value, Mapping) else None


def diff(
    before: Mapping[str, Any], after: Mapping[str, Any], paths: Iterable[RecordPath] | None = None
) -> list[tuple[RecordPath, Any]]:
    """The changes that turn ``before`` into ``after``: at ``paths`` only when given, else
    everywhere (sections compared record by record)."""
    if paths is None:
        paths = _paths_of(before) | _paths_of(after)
    wanted = set(paths)
    for path in list(wanted):  # records the change added in a section it was handed
        if len(path) == 1 and isinstance(after.get(path[0]), Mapping):
            wanted |= {(path[0], key) for key in after[path[0]]}
    changes = []
    for path in sorted(wanted):
        old, new = lookup(before, path), lookup(after, path)
        if len(path) == 1 and isinstance(old, Mapping) and isinstance(new, Mapping):
            continue  # a section: compared record by record
        if old != new:
            changes.append((path, copy.deepcopy(new)))
    return changes


def _paths_of(records: Mapping[str, Any]) -> set[RecordPath]:
    paths: set[RecordPath] = set()
    for top, value in records.items():
        paths.add((top,))
        if isinstance(value, Mapping):
            paths.update((top, key) for key in value)
    return paths


def apply(records: Records, path: RecordPath, value: Any) -> None:
    """Set (or, for ``None``, delete) the record at ``path`` in ``records``, in place."""
    if len(path) == 1:
        if value is None:
            records.pop(path[0], None)
        else:
            records[path[0]] = value
        return
    section = records.get(path[0])
    if not isinstance(section, dict):
        if value is None:
            return
        section = records[path[0]] = {}
    if value is None:
        section.pop(path[1], None)
        if not section:
            del records[path[0]]
    else:
        section[path[1]] = value


def run(
    state: Records, paths: list[RecordPath] | None, mutate: Callable[[Records], T]
) -> tuple[Records, T, list[tuple[RecordPath, Any]]]:
    """Hand ``mutate`` a copy of the records at ``paths`` (all of them when None); what it saw and
    changed, its result, and the changes it made. ``state`` itself is not touched."""
    before = state if paths is None else select(state, paths)
    doc = copy.deepcopy(before)
    result = mutate(doc)
    return doc, result, diff(before, doc, paths)


class ChangeLog:
    """The most recent changes, in sequence order, for readers that ask what changed since their
    cursor; it knows from which sequence number on it is complete (a batch larger than it holds,
    or one pushed out, makes older cursors read everything again)."""

    def __init__(self, size: int = 4096) -> None:
        self._items: deque[Change] = deque()
        self._size = size
        self.complete_from = 1

    def add(self, seq: int, path: RecordPath, value: Any) -> None:
        if len(self._items) >= self._size:
            self.complete_from = self._items.popleft().seq + 1
        self._items.append(Change(seq, path, value))

    def since(self, seq: int) -> list[Change] | None:
        """The changes after ``seq``, oldest first; None when some of them are no longer here."""
        if seq + 1 < self.complete_from:
            return None
        newer: list[Change] = []
        for change in reversed(self._items):
            if change.seq <= seq:
                break
            newer.append(change)
        newer.reverse()
        return newer

    def restart(self, seq: int) -> None:
        """Forget everything: complete only after ``seq``."""
        self._items.clear()
        self.complete_from = seq + 1
