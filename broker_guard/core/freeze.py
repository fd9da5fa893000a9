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
import math
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
    HALTED = "halted"  # orders only: every entry refused, fleet-wide


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
    frozen_by: str = "guard"  # the guard itself, or who froze it by hand (``user@host``)

    @property
    def by_guard(self) -> bool:
        return self.frozen_by == "guard"

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
    def from_dict(cls, raw: Any) -> FrozenSymbol:
        """The record a stored dict describes; ``ValueError`` naming the field when any has the
        wrong type (``"auto_unfreeze": "false"`` is not a boolean)."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"a frozen record must be an object, not {type(raw).__name__}")
        cooldown = _typed(raw, "cooldown_hours", (int, float), 24.0)
        if not math.isfinite(cooldown) or cooldown < 0:
            raise ValueError(f"cooldown_hours must be a finite number >= 0, not {cooldown!r}")
        reason = _typed(raw, "reason", str, "")
        by = _typed(raw, "frozen_by", str, "") or _made_by(reason)
        auto = _typed(raw, "auto_unfreeze", bool, False)
        return cls(
            symbol=_typed(raw, "symbol", str),
            reason=reason,
            last_error=_typed(raw, "last_error", str, ""),
            frozen_at=parse_utc_iso(_typed(raw, "frozen_at", str)),
            consecutive_failures=_typed(raw, "consecutive_failures", int, 0),
            manual_review=_typed(raw, "manual_review", bool, True),
            # a record from before 0.2 names no author: a freeze by hand never expires
            auto_unfreeze=auto and ("frozen_by" in raw or by == "guard"),
            cooldown_hours=float(cooldown),
            frozen_by=by,
        )


# the reasons the guard gives its own freezes; a record from before 0.2 with any other reason was
# frozen by hand
GUARD_REASONS = (
    "consecutive price fetch failures",
    "probe call failed after the cooldown",
    "failure record was malformed",
    "damaged state record",
)


def _made_by(reason: str) -> str:
    return "guard" if any(r in reason for r in GUARD_REASONS) else "operator"


@dataclass(frozen=True)
class Halt:
    """Trading halted: every entry refused on every symbol, exits allowed, until resumed."""

    reason: str
    by: str  # who: ``user@host`` for an operator, the guard's account for an automatic halt
    at: float  # epoch seconds, UTC
    auto: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = utc_iso(self.at)
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Halt:
        if not isinstance(raw, Mapping):
            raise ValueError(f"a halt record must be an object, not {type(raw).__name__}")
        return cls(
            reason=_typed(raw, "reason", str),
            by=_typed(raw, "by", str, "unknown"),
            at=parse_utc_iso(_typed(raw, "at", str)),
            auto=_typed(raw, "auto", bool, False),
        )


HALT_KEY = ("halt", "trading")  # the one halt record, in the freeze state
RESUMED_KEY = ("halt", "last_resume")  # who resumed last, when and why
REFROZEN_REASON = "probe call failed after the cooldown"


def read_halt(raw: Any, now: float) -> tuple[Halt | None, str | None]:
    """A stored halt record; a damaged one still halts (fail closed), with its problem."""
    if raw is None:
        return None, None
    try:
        return Halt.from_dict(raw), None
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"malformed halt record: {exc}"
        return Halt(f"damaged halt record ({exc}): review it, then resume", "unknown", now), problem


_MISSING: Any = object()


def _typed(raw: Mapping[str, Any], key: str, kind: Any, default: Any = _MISSING) -> Any:
    """``raw[key]`` when it has the JSON type ``kind`` (a bool is not a number here)."""
    if key not in raw and default is not _MISSING:
        return default
    value = raw.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"{key} must be {_type_names(kinds)}, not {value!r:.40}")
    if not isinstance(value, kinds):
        raise ValueError(f"{key} must be {_type_names(kinds)}, not {value!r:.40}")
    return value


def _type_names(kinds: tuple[type, ...]) -> str:
    names = {bool: "a JSON boolean", str: "a string", int: "a whole number", float: "a number"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


MAX_COUNT = 10**9


def count_of(entry: Any) -> int | None:
    """The failure count a stored entry holds, or None when it is malformed (a bare number, a
    string, NaN, a count no process could have reached)."""
    if not isinstance(entry, Mapping):
        return None
    count = entry.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        return None
    return count


@dataclass(frozen=True)
class Book:
    """The state one process trades on: frozen records, failure counts, the restricted list."""

    frozen: Mapping[str, FrozenSymbol]
    counts: Mapping[str, int]  # only symbols with a non-zero count
    restricted: frozenset[str]
    halt: Halt | None = None


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


def order_verdict(book: Book, canon: str, now: float) -> Verdict:
    """An order that opens or adds exposure: refused while trading is halted, on a restricted or
    a frozen symbol. An order is never the probe: after a cooldown a price call must succeed
    first."""
    if book.halt is not None:
        return Verdict.HALTED
    return admit(book, canon, now, probe_free=False)


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
    """A freeze the guard makes itself: probed after the cooldown when ``auto_unfreeze``."""
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


def check_freeze_hours(hours: float | None) -> None:
    """A freeze's duration: None (never expires) or a finite number of hours above zero."""
    if hours is not None and not (math.isfinite(hours) and hours > 0):
        raise ValueError(f"a freeze's duration must be a finite number of hours > 0, not {hours}")


def operator_record(
    symbol: str, reason: str, now: float, count: int, by: str, hours: float | None
) -> FrozenSymbol:
    """A freeze by hand: it never expires unless given a duration (``--for`` / ``--until``),
    after which one price call probes it like any other."""
    check_freeze_hours(hours)
    return FrozenSymbol(
        symbol=symbol,
        reason=reason,
        last_error=reason,
        frozen_at=now,
        consecutive_failures=count,
        manual_review=True,
        auto_unfreeze=hours is not None,
        cooldown_hours=hours or 0.0,
        frozen_by=by,
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
    failures = _section(doc, "failures")
    frozen = _section(doc, "frozen")
    previous = count_of(failures.get(failure.canon, {"count": 0}))
    count = policy.failure_threshold if previous is None else previous + 1
    failures[failure.canon] = {
        "count": count,
        "last_error": failure.message,
        "last_failure_at": utc_iso(failure.now),
        "symbol": failure.symbol,
    }
    if previous is None and failure.canon not in frozen:  # fail closed: a damaged count freezes
        reason = "failure record was malformed; frozen for review"
        record = new_record(
            policy, failure.symbol, reason, failure.message, failure.now, count, True
        )
        frozen[failure.canon] = record.as_dict()
        return count, Transition.FROZEN
    if failure.canon in frozen:
        old = frozen[failure.canon]
        old = old if isinstance(old, Mapping) else {}
        if not failure.probing or old.get("auto_unfreeze") is not True:
            return count, Transition.COUNTED  # a freeze by hand made meanwhile stays as it is
        symbol = old.get("symbol")
        record = new_record(
            policy,
            symbol if isinstance(symbol, str) else failure.symbol,
            REFROZEN_REASON,
            failure.message,
            failure.now,
            count,
            old.get("manual_review") is not False,
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
    frozen = _section(doc, "frozen")
    was = canon in frozen
    count = count_of(_section(doc, "failures").get(canon, {})) or 0
    frozen[canon] = record_of(count).as_dict()
    return not was


def unfreeze(doc: dict[str, Any], canon: str) -> dict[str, Any] | None:
    """Lift the freeze and reset the count; the removed record, or None when it was not frozen."""
    _section(doc, "failures").pop(canon, None)
    removed = _section(doc, "frozen").pop(canon, None)
    return removed if isinstance(removed, dict) else ({} if removed is not None else None)


def halt(doc: dict[str, Any], record: Halt, *, replace: bool = True) -> bool:
    """Halt trading; True when it was not halted. ``replace=False`` (an automatic halt) leaves a
    halt already in place as it is."""
    section = _section(doc, HALT_KEY[0])
    was = HALT_KEY[1] in section
    if replace or not was:
        section[HALT_KEY[1]] = record.as_dict()
    return not was


def resume(doc: dict[str, Any], record: Halt) -> Any:
    """Lift the halt, keeping who resumed and why; the removed halt, or None (and no change)
    when trading was not halted."""
    section = _section(doc, HALT_KEY[0])
    removed = section.pop(HALT_KEY[1], None)
    if removed is not None:
        section[RESUMED_KEY[1]] = record.as_dict()
    return removed


def unfreeze_after_probe(doc: dict[str, Any], canon: str, now: float) -> dict[str, Any] | None:
    """A probe succeeded: lift the freeze only if the stored record is still one whose time has
    come (a freeze by hand made while the probe was in flight stays); the lifted record, or
    None."""
    raw = _section(doc, "frozen").get(canon)
    try:
        record = FrozenSymbol.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return None  # damaged: held for review
    due = record.unfreeze_at
    if due is None or now < due:
        return None
    return unfreeze(doc, canon)


def reset_count(doc: dict[str, Any], canon: str) -> None:
    """A good price: the failures so far were not consecutive after all."""
    _section(doc, "failures").pop(canon, None)


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """``doc[name]`` as a dict; a section of the wrong shape is replaced by one of the right
    shape (its damage was reported, and its symbols kept frozen, when it was read)."""
    section = doc.get(name)
    if not isinstance(section, dict):
        section = doc[name] = {}
    return section


# the records a change to one symbol touches: what a store hands the change, whatever its size
def symbol_keys(canon: str) -> list[tuple[str, str]]:
    return [("failures", canon), ("frozen", canon)]


# -- reading the state document ---------------------------------------------------------------


def read_book(
    doc: Mapping[str, Any], restricted: frozenset[str], now: float
) -> tuple[Book, list[tuple[str, str]]]:
    """The book a document describes, and (what, problem) for each malformed part.

    A malformed frozen record or failure count leaves its symbol frozen for review; a section of
    the wrong shape is reported: a fault never releases a freeze.
    """
    frozen: dict[str, FrozenSymbol] = {}
    counts: dict[str, int] = {}
    malformed: list[tuple[str, str]] = []
    for name in ("frozen", "failures"):
        section = doc.get(name, {})
        if not isinstance(section, Mapping):
            malformed.append(
                (name, f"the {name} section is {type(section).__name__}, not an object")
            )
    for canon, raw in _items(doc, "frozen"):
        record, problem = read_frozen(canon, raw, now)
        frozen[canon] = record
        if problem:
            malformed.append((canon, problem))
    for canon, entry in _items(doc, "failures"):
        count, held, problem = read_count(canon, entry, now)
        if count:
            counts[canon] = count
        if held is not None and canon not in frozen:
            frozen[canon] = held
            malformed.append((canon, problem or ""))
    halts = doc.get(HALT_KEY[0])
    raw = halts.get(HALT_KEY[1]) if isinstance(halts, Mapping) else halts
    halted, problem = read_halt(raw, now)
    if problem:
        malformed.append(("halt", problem))
    return Book(frozen, counts, restricted, halted), malformed


def _items(doc: Mapping[str, Any], name: str) -> list[tuple[str, Any]]:
    section = doc.get(name, {})
    return list(section.items()) if isinstance(section, Mapping) else []


def read_frozen(canon: str, raw: Any, now: float) -> tuple[FrozenSymbol, str | None]:
    """A stored frozen record, or when it is malformed a freeze for review and the problem."""
    try:
        return FrozenSymbol.from_dict(raw), None
    except (KeyError, TypeError, ValueError) as exc:
        return held_for_review(canon, f"malformed frozen record: {exc}", now), str(exc)


def read_count(canon: str, entry: Any, now: float) -> tuple[int, FrozenSymbol | None, str | None]:
    """A stored failure count; a malformed one holds its symbol frozen for review."""
    count = count_of(entry)
    if count is not None:
        return count, None, None
    problem = f"malformed failure count {entry!r:.60}"
    return 0, held_for_review(canon, problem, now), problem


def held_for_review(canon: str, problem: str, now: float) -> FrozenSymbol:
    """What a damaged record becomes: frozen, no auto-unfreeze, until an operator looks."""
    return FrozenSymbol(
        canon, "damaged state record: frozen for review", problem, now, 0, True, False, 0.0
    )


def memory_document(book: Book) -> dict[str, Any]:
    """The document a book was read from, for a change applied in memory when the store fails."""
    doc: dict[str, Any] = {
        "failures": {s: {"count": n} for s, n in book.counts.items()},
        "frozen": {s: info.as_dict() for s, info in book.frozen.items()},
    }
    if book.halt is not None:
        doc[HALT_KEY[0]] = {HALT_KEY[1]: book.halt.as_dict()}
    return doc
