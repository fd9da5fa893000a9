"""The freeze rules, as one pure state machine every call path asks.

A symbol is in one of a few states: trading (no failures), failing (counted,
below the threshold), frozen (refused for entries; exits pass), probing (the
one call allowed after an auto-unfreeze cooldown) and restricted (never
traded). The functions below decide the transitions; they take the facts
(the time, the failure's kind, the records) as arguments and return the
verdict, or change the state document they are handed, which the caller
saves. No store, no logging, no clock of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from broker_guard.classify import FailureKind
from broker_guard.clock import parse_utc_iso, utc_iso
from broker_guard.config import FreezePolicy

ALLOW = 0  # admission modes, as ints: the hot path compares them cheaply
PROBE = 1


class Verdict(enum.Enum):
    """What ``admit`` decides for one call on one symbol."""

    ALLOW = "allow"
    PROBE = "probe"  # the one call after the cooldown: its outcome unfreezes or refreezes
    FROZEN = "frozen"
    RESTRICTED = "restricted"


class Transition(enum.Enum):
    """What a recorded failure did to the symbol."""

    COUNTED = "counted"
    FROZEN = "frozen"
    REFROZEN = "refrozen"  # a probe failed: frozen again for a new cooldown


@dataclass(frozen=True)
class FrozenSymbol:
    symbol: str  # as first seen (``AUT-USD``); the state is keyed by the canonical form
    reason: str
    last_error: str
    frozen_at: float  # epoch seconds, UTC
    consecutive_failures: int
    manual_review: bool
    auto_unfreeze: bool
    cooldown_hours: float

    @property
    def frozen_at_iso(self) -> str:
        return utc_iso(self.frozen_at)

    @property
    def unfreeze_at(self) -> float | None:
        return self.frozen_at + self.cooldown_hours * 3600 if self.auto_unfreeze else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["frozen_at"] = self.frozen_at_iso
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FrozenSymbol:
        return cls(
            symbol=str(raw["symbol"]),
            reason=str(raw.get("reason", "")),
            last_error=str(raw.get("last_error", "")),
            frozen_at=parse_utc_iso(str(raw["frozen_at"])),
            consecutive_failures=int(raw.get("consecutive_failures", 0)),
            manual_review=bool(raw.get("manual_review", True)),
            auto_unfreeze=bool(raw.get("auto_unfreeze", False)),
            cooldown_hours=float(raw.get("cooldown_hours", 24.0)),
        )


@dataclass(frozen=True)
class Book:
    """The state one process trades on: frozen records, failure counts, the restricted list."""

    frozen: Mapping[str, FrozenSymbol]
    counts: Mapping[str, int]  # only symbols with a non-zero count
    restricted: frozenset[str]

    @property
    def blocked(self) -> frozenset[str]:
        """Frozen or restricted: the one set the hot path looks a symbol up in."""
        return frozenset(self.frozen) | self.restricted


EMPTY_BOOK = Book({}, {}, frozenset())


# -- verdicts ---------------------------------------------------------------------------------


def admit(
    book: Book, canon: str, now: float, *, entry: bool = True, probe_free: bool = True
) -> Verdict:
    """Whether a call on ``canon`` may go to the broker.

    ``entry=False`` is an exit (a sell or close): allowed on a frozen or a
    restricted symbol. ``probe_free=False``: the probe slot is taken (or the
    caller may not probe, like an order), so a cooled-down symbol stays frozen.
    """
    if canon in book.restricted:
        return Verdict.ALLOW if not entry else Verdict.RESTRICTED
    record = book.frozen.get(canon)
    if record is None or not entry:
        return Verdict.ALLOW
    due = record.unfreeze_at
    if probe_free and due is not None and now >= due:
        return Verdict.PROBE
    return Verdict.FROZEN


def is_frozen(book: Book, canon: str, now: float) -> bool:
    """The seed's ``is_frozen``: restricted, or frozen and its cooldown not yet over."""
    if canon in book.restricted:
        return True
    record = book.frozen.get(canon)
    if record is None:
        return False
    due = record.unfreeze_at
    return due is None or now < due


def counts_toward_freeze(kind: FailureKind, policy: FreezePolicy) -> bool:
    """Only failures about the symbol count: an outage (or bad credentials) must not freeze it."""
    if kind is FailureKind.AUTH:
        return False
    return not kind.retryable or policy.count_transient_failures


def probe_settled_by(kind: FailureKind) -> bool:
    """A probe failing transiently (or on auth) says nothing about the symbol: no verdict."""
    return not (kind.retryable or kind is FailureKind.AUTH)


def cooled_down(book: Book, canon: str, now: float) -> bool:
    """Frozen with auto-unfreeze and past its cooldown (the seed API's success then unfreezes)."""
    record = book.frozen.get(canon)
    due = record.unfreeze_at if record else None
    return due is not None and now >= due


# -- transitions on the state document --------------------------------------------------------


def new_record(
    policy: FreezePolicy,
    symbol: str,
    reason: str,
    last_error: str,
    now: float,
    count: int,
    manual: bool,
) -> FrozenSymbol:
    return FrozenSymbol(
        symbol=symbol,
        reason=reason,
        last_error=last_error,
        frozen_at=now,
        consecutive_failures=count,
        manual_review=manual or policy.manual_review_required,
        auto_unfreeze=policy.auto_unfreeze,
        cooldown_hours=policy.cooldown_hours,
    )


@dataclass(frozen=True)
class Failure:
    """One counted failure: which symbol, its message, when, and whether it ended a probe."""

    canon: str
    symbol: str
    message: str
    now: float
    probing: bool


def record_failure(
    doc: dict[str, Any], failure: Failure, policy: FreezePolicy
) -> tuple[int, Transition]:
    """Count ``failure`` in ``doc``; freeze at the threshold, refreeze when it ended a probe."""
    failures = doc.setdefault("failures", {})
    frozen = doc.setdefault("frozen", {})
    entry = failures.setdefault(failure.canon, {"count": 0})
    entry.update(
        count=int(entry.get("count", 0)) + 1,
        last_error=failure.message,
        last_failure_at=utc_iso(failure.now),
        symbol=failure.symbol,
    )
    count = int(entry["count"])
    if failure.canon in frozen:
        if not failure.probing:
            return count, Transition.COUNTED
        old = frozen[failure.canon]
        record = new_record(
            policy,
            str(old.get("symbol", failure.symbol)),
            "probe call failed after the cooldown",
            failure.message,
            failure.now,
            count,
            bool(old.get("manual_review", True)),
        )
        frozen[failure.canon] = record.as_dict()
        return count, Transition.REFROZEN
    if count >= policy.failure_threshold:
        reason = f"{count} consecutive price fetch failures"
        record = new_record(
            policy, failure.symbol, reason, failure.message, failure.now, count, False
        )
        frozen[failure.canon] = record.as_dict()
        return count, Transition.FROZEN
    return count, Transition.COUNTED


def freeze(doc: dict[str, Any], canon: str, record_of: Any) -> bool:
    """Freeze ``canon`` whatever its count; ``record_of(count)`` builds the record. True when
    new."""
    frozen = doc.setdefault("frozen", {})
    was = canon in frozen
    count = int(doc.get("failures", {}).get(canon, {}).get("count", 0))
    frozen[canon] = record_of(count).as_dict()
    return not was


def unfreeze(doc: dict[str, Any], canon: str) -> dict[str, Any] | None:
    """Lift the freeze and reset the count; the removed record, or None when it was not frozen."""
    doc.setdefault("failures", {}).pop(canon, None)
    removed: dict[str, Any] | None = doc.setdefault("frozen", {}).pop(canon, None)
    return removed


def reset_count(doc: dict[str, Any], canon: str) -> None:
    """A good price: the failures so far were not consecutive after all."""
    doc.setdefault("failures", {}).pop(canon, None)


# -- reading the state document ---------------------------------------------------------------


def read_book(
    doc: Mapping[str, Any], restricted: frozenset[str], now: float
) -> tuple[Book, list[tuple[str, str]]]:
    """The book a document describes, and (symbol, problem) for each malformed frozen record.

    A malformed record stays frozen, for review: a fault never releases a freeze.
    """
    frozen: dict[str, FrozenSymbol] = {}
    malformed: list[tuple[str, str]] = []
    for canon, raw in doc.get("frozen", {}).items():
        try:
            frozen[canon] = FrozenSymbol.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            malformed.append((canon, str(exc)))
            frozen[canon] = FrozenSymbol(
                canon, "malformed record", str(exc), now, 0, True, False, 0.0
            )
    counts = {}
    for canon, entry in doc.get("failures", {}).items():
        count = entry.get("count", 0) if isinstance(entry, dict) else 0
        if isinstance(count, int) and count > 0:
            counts[canon] = count
    return Book(frozen, counts, restricted), malformed


def memory_document(book: Book) -> dict[str, Any]:
    """The document a book was read from, for a change applied in memory when the store fails."""
    return {
        "failures": {s: {"count": n} for s, n in book.counts.items()},
        "frozen": {s: info.as_dict() for s, info in book.frozen.items()},
    }
