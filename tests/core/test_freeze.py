"""The pure freeze rules: verdicts and transitions, without a store, a clock or a log."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from broker_guard.classify import FailureKind
from broker_guard.config import FreezePolicy
from broker_guard.core import freeze as rules
from broker_guard.core.freeze import Book, Failure, Transition, Verdict

T0 = 1_767_225_600.0
POLICY = FreezePolicy(failure_threshold=3, cooldown_hours=1.0, auto_unfreeze=True)


def frozen_book(*, auto_unfreeze: bool = True, restricted: frozenset[str] = frozenset()) -> Book:
    policy = FreezePolicy(cooldown_hours=1.0, auto_unfreeze=auto_unfreeze)
    record = rules.new_record(policy, "SOL-USD", "test", "err", T0, 3, False)
    return Book({"SOL/USD": record}, {"SOL/USD": 3}, restricted)


def failure(now: float = T0, probing: bool = False) -> Failure:
    return Failure("SOL/USD", "SOL-USD", "symbol not found", now, probing)


def test_verdicts_for_a_frozen_symbol() -> None:
    book = frozen_book()
    assert rules.admit(book, "BTC/USD", T0) is Verdict.ALLOW
    assert rules.admit(book, "SOL/USD", T0 + 10) is Verdict.FROZEN
    assert rules.admit(book, "SOL/USD", T0 + 10, entry=False) is Verdict.ALLOW  # exits pass
    assert rules.admit(book, "SOL/USD", T0 + 3600) is Verdict.PROBE
    assert rules.admit(book, "SOL/USD", T0 + 3600, probe_free=False) is Verdict.FROZEN
    assert rules.admit(frozen_book(auto_unfreeze=False), "SOL/USD", T0 + 10**6) is Verdict.FROZEN


def test_restricted_symbols_refuse_entries_and_allow_exits() -> None:
    book = Book({}, {}, frozenset({"AUT/USD"}))
    assert rules.admit(book, "AUT/USD", T0) is Verdict.RESTRICTED
    assert rules.admit(book, "AUT/USD", T0, entry=False) is Verdict.ALLOW
    assert rules.is_frozen(book, "AUT/USD", T0)


def test_failures_count_up_to_a_freeze() -> None:
    doc: dict[str, Any] = {}
    assert rules.record_failure(doc, failure(), POLICY) == (1, Transition.COUNTED)
    assert rules.record_failure(doc, failure(), POLICY) == (2, Transition.COUNTED)
    assert rules.record_failure(doc, failure(), POLICY) == (3, Transition.FROZEN)
    assert doc["frozen"]["SOL/USD"]["reason"] == "3 consecutive price fetch failures"
    assert rules.record_failure(doc, failure(), POLICY) == (
        4,
        Transition.COUNTED,
    )  # no second freeze


def test_a_failed_probe_refreezes_for_a_new_cooldown() -> None:
    doc: dict[str, Any] = {"frozen": {"SOL/USD": frozen_book().frozen["SOL/USD"].as_dict()}}
    later = T0 + 7200
    assert rules.record_failure(doc, failure(later, probing=True), POLICY)[1] is Transition.REFROZEN
    book, _ = rules.read_book(doc, frozenset(), later)
    assert book.frozen["SOL/USD"].frozen_at == later
    assert rules.admit(book, "SOL/USD", later + 10) is Verdict.FROZEN


def test_what_counts_and_what_settles_a_probe() -> None:
    counting = FreezePolicy(count_transient_failures=True)
    assert rules.counts_toward_freeze(FailureKind.BAD_SYMBOL, POLICY)
    assert not rules.counts_toward_freeze(FailureKind.TRANSIENT, POLICY)
    assert rules.counts_toward_freeze(FailureKind.TRANSIENT, counting)
    assert not rules.counts_toward_freeze(
        FailureKind.AUTH, counting
    )  # credentials, never the symbol
    assert rules.probe_settled_by(FailureKind.BAD_SYMBOL)
    assert not rules.probe_settled_by(FailureKind.RATE_LIMIT)
    assert not rules.probe_settled_by(FailureKind.AUTH)


def test_a_malformed_record_stays_frozen_for_review() -> None:
    book, malformed = rules.read_book(
        {"frozen": {"SOL/USD": {"symbol": "SOL-USD"}}}, frozenset(), T0
    )
    assert [canon for canon, _ in malformed] == ["SOL/USD"]
    assert rules.admit(book, "SOL/USD", T0 + 10**9) is Verdict.FROZEN


def test_unfreeze_and_reset() -> None:
    doc: dict[str, Any] = {}
    for _ in range(3):
        rules.record_failure(doc, failure(), POLICY)
    assert rules.unfreeze(doc, "SOL/USD") is not None
    assert rules.unfreeze(doc, "SOL/USD") is None
    assert doc == {"failures": {}, "frozen": {}}


kinds = st.sampled_from(list(FailureKind))
events = st.lists(st.tuples(st.booleans(), st.floats(0, 10 * 3600)), max_size=30)


@given(events)
def test_recording_failures_never_releases_a_freeze(steps: list[tuple[bool, float]]) -> None:
    """Failures only ever add freezes: no sequence of them (probing or not) lifts one."""
    doc: dict[str, Any] = {}
    frozen_so_far: set[str] = set()
    now = T0
    for probing, dt in steps:
        now += dt
        rules.record_failure(doc, failure(now, probing), POLICY)
        assert frozen_so_far <= set(doc.get("frozen", {}))
        frozen_so_far |= set(doc.get("frozen", {}))


@given(st.booleans(), st.booleans(), st.booleans(), st.floats(-10.0, 10 * 3600), st.booleans())
def test_an_entry_on_a_frozen_or_restricted_symbol_is_never_allowed(
    frozen: bool, restricted: bool, auto_unfreeze: bool, dt: float, probe_free: bool
) -> None:
    """The only entry a blocked symbol admits is the one probe after its cooldown (never on a
    restricted symbol); exits are always allowed."""
    book = frozen_book(auto_unfreeze=auto_unfreeze) if frozen else Book({}, {}, frozenset())
    if restricted:
        book = Book(book.frozen, book.counts, frozenset({"SOL/USD"}))
    now = T0 + dt
    verdict = rules.admit(book, "SOL/USD", now, probe_free=probe_free)
    if restricted:
        assert verdict is Verdict.RESTRICTED
    elif frozen:
        cooled = auto_unfreeze and dt >= 3600
        assert verdict is (Verdict.PROBE if cooled and probe_free else Verdict.FROZEN)
    else:
        assert verdict is Verdict.ALLOW
    assert rules.admit(book, "SOL/USD", now, entry=False, probe_free=probe_free) is Verdict.ALLOW
