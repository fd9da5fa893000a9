"""The Symbol Freeze Manager: the freeze rules of ``core.freeze``, kept in shared state, logged.

Counts consecutive failures that are about one symbol, freezes it at the
threshold and flags it for manual review; after the cooldown an
auto-unfreezing symbol gets one probe call. Restricted symbols are never
traded. State is shared through the store, so every process on a data
directory (or a Redis), and the operator's CLI, see one set of frozen symbols.
The seed's import path for it is ``broker_guard.symbol_freeze_manager``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from broker_guard.classify import FailureKind, classify
from broker_guard.clock import Clock, system_clock, utc_iso
from broker_guard.config import FreezePolicy, HaltPolicy
from broker_guard.core import freeze as rules
from broker_guard.core.freeze import (
    ALLOW,
    HALT_KEY,
    PROBE,
    Book,
    FrozenSymbol,
    Halt,
    Transition,
    Verdict,
)
from broker_guard.errors import (
    GuardRefusedError,
    StateUnconfirmedError,
    StoreError,
    SymbolFrozenError,
    SymbolRestrictedError,
    TradingHaltedError,
)
from broker_guard.events import EventHook, GuardEvent, actor, emit
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state.base import Cursor, Store
from broker_guard.state.memory import MemoryStore
from broker_guard.state.records import UNATTRIBUTED, Change
from broker_guard.symbols import canonical_symbol

log = redact_logger("broker_guard.freeze")

STATE = "symbol_freeze"
RESTRICTED = "restricted_symbols"
_MAX_ERROR_CHARS = 300
BAR = "=" * 70


def shipped_restricted_symbols() -> list[str]:
    """The restricted list the package ships (AUT-USD), used until a data dir has its own."""
    text = (
        resources.files("broker_guard")
        .joinpath("restricted_symbols.json")
        .read_text(encoding="utf-8")
    )
    return list(json.loads(text)["restricted_symbols"])


class SymbolFreezeManager:
    """Failure counts, freezes, cooldown probes and the restricted list, for one store.

    ``watched``, ``blocked``, ``failing`` and ``next_refresh`` are read by the
    guarded calls' fast path (a set lookup and a clock read). One record's change
    updates them in place under the manager's lock, ``watched`` first when a symbol
    is added and last when it is removed, so the fast path never skips a blocked
    symbol; anything that iterates them takes the lock.
    """

    def __init__(
        self,
        policy: FreezePolicy | None = None,
        *,
        store: Store | None = None,
        clock: Clock = system_clock,
        refresh_interval: float = 1.0,
        on_event: EventHook | None = None,
        secrets: Iterable[str] = (),
        halt_policy: HaltPolicy | None = None,
    ) -> None:
        self.policy = policy or FreezePolicy()
        self.halt_policy = halt_policy or HaltPolicy()
        self.store: Store = store if store is not None else MemoryStore()
        self.clock = clock
        # intervals: a clock that brings its own monotonic reading (FakeClock) is used whole
        self.monotonic: Clock = getattr(clock, "monotonic", time.monotonic)
        self._refresh_interval = refresh_interval
        self._on_event = on_event
        self._secrets = tuple(secrets)
        register_secrets(self._secrets)  # masked in every log line, by the package's log filter
        self._lock = threading.RLock()
        self._frozen: dict[str, FrozenSymbol] = {}
        self._counts: dict[str, int] = {}
        self._book: Book = Book(self._frozen, self._counts, frozenset())
        self.blocked: set[str] = set()  # frozen or restricted
        self.failing: Mapping[str, int] = self._counts  # symbols with a non-zero failure count
        self.watched: set[str] = set()  # blocked or failing: not for the fast path
        self.halted: Halt | None = None  # trading halted: every entry refused, fleet-wide
        self.next_refresh = -math.inf
        self._probing: set[str] = set()
        self._cursors: dict[str, Cursor] = {}
        self._store_problem: str | None = None
        # a halt the store refused to save: in force here until it is saved or resumed
        self._unsaved_halt: Halt | None = None
        self.unreadable: str | None = None  # why shared state cannot be read: entries refused
        self.damaged: dict[str, str] = {}  # records held frozen for review, and their problem
        # damage the store could not tie to a record: every entry refused until reviewed
        self.unattributed: dict[str, str] = {}
        self._held_for_count: set[str] = set()  # held only because their failure count is damaged
        # called after a guarded call's refresh (at most once per refresh_interval): the heartbeat
        self.on_refresh: Callable[[], None] | None = None
        self._refresh(force=True)

    # -- the guarded calls ask these ---------------------------------------------------------

    def admit(self, canon: str, *, entry: bool = True) -> int:
        """ALLOW, PROBE (the one call after a cooldown, whose slot the caller must settle or
        release with ``end_probe``), or raise for a frozen or restricted symbol."""
        now = self._refreshed()
        book = self._book  # one state for the whole decision, whatever another thread loads
        verdict = rules.admit(book, canon, now, entry=entry, probe_free=canon not in self._probing)
        if verdict is Verdict.ALLOW:
            return ALLOW
        record = book.frozen.get(canon)
        if verdict is Verdict.PROBE and record is not None and self._take_probe(record, canon, now):
            return PROBE
        raise self.refused(canon, _refusal(book, canon, verdict, order=False), what="price call")

    def refusal(self, canon: str) -> GuardRefusedError | None:
        """The error an order opening or adding exposure on ``canon`` would be refused with (trading
        halted, a frozen or restricted symbol, state that cannot be read), or None. Says nothing
        and emits nothing: the caller may still find the order is an exit."""
        now = self._refreshed()
        if self.unreadable is not None or self.unattributed:
            return self._unconfirmed(canon)
        if self.halted is None and canon not in self.blocked:  # the common case: nothing to decide
            return None
        book = self._book
        verdict = rules.order_verdict(book, canon, now)
        return None if verdict is Verdict.ALLOW else _refusal(book, canon, verdict, order=True)

    def blanket_refusal(self, what: str) -> GuardRefusedError | None:
        """The refusal that applies to every symbol (trading halted, state unread), for an order
        whose symbol the guard cannot read."""
        self._refreshed()
        if self.unreadable is not None or self.unattributed:
            return self._unconfirmed(what)
        if self.halted is not None:
            return _refusal(self._book, what, Verdict.HALTED, order=True)
        return None

    def check_entry(self, canon: str) -> None:
        """Refuse an order that opens or adds to a position on a frozen or restricted symbol, or
        while trading is halted. An order is never the probe: after a cooldown a price call must
        succeed first."""
        error = self.refusal(canon)
        if error is not None:
            raise self.refused(canon, error)

    def refused(
        self, canon: str, error: GuardRefusedError, *, what: str = "entry order"
    ) -> GuardRefusedError:
        """Report a refused call (an event) and hand back the error to raise."""
        why = {"why": f"{what} refused: {type(error).__name__}", "reason": error.reason}
        emit(self._on_event, GuardEvent("refused", self.clock(), canon, why))
        return error

    def record_success(self, canon: str, *, probe: bool = False) -> None:
        """Reset the failure count; a successful probe unfreezes. Cheap when there is nothing to
        reset."""
        if probe:  # unfreezing gives the probe slot back
            self._unfreeze_probed(canon)
        elif canon in self.failing:
            self._persist(
                rules.symbol_keys(canon),
                lambda doc: rules.reset_count(doc, canon),
                replay=False,
                urgent=True,
            )

    def _unfreeze_probed(self, canon: str) -> None:
        """A probe succeeded: unfreeze, unless the record is no longer one a probe may lift (a
        freeze by hand made while the probe was in flight)."""
        now = self.clock()
        lifted = self._persist(
            rules.symbol_keys(canon),
            lambda doc: rules.unfreeze_after_probe(doc, canon, now),
            replay=False,
        )
        self.end_probe(canon)
        if lifted is None:
            log.warning("%s: the probe succeeded but the freeze was renewed meanwhile; kept", canon)
            return
        display = str(lifted.get("symbol", canon)) if isinstance(lifted, dict) else canon
        self._announce_unfreeze(canon, display, "probe call succeeded after the cooldown")

    def end_probe(self, canon: str) -> None:
        """Release a probe slot without a verdict (the call was cancelled or failed transiently)."""
        with self._lock:
            self._probing.discard(canon)

    def record_failure(self, symbol: str, error: BaseException | str, kind: FailureKind) -> bool:
        """Count a failure of ``kind`` about ``symbol``; True when the symbol is (now) frozen."""
        canon = canonical_symbol(symbol)
        if not rules.counts_toward_freeze(kind, self.policy):
            log.debug(
                "price failure for %s not counted toward freezing: %s is %s",
                symbol,
                error,
                kind.value,
            )
            return canon in self._book.frozen
        message = redact(error, self._secrets)[:_MAX_ERROR_CHARS] or kind.value
        now = self.clock()
        with self._lock:
            probing = canon in self._probing
            self._probing.discard(canon)
        failure = rules.Failure(canon, symbol, message, now, probing)
        result = self._persist(
            rules.symbol_keys(canon),
            lambda doc: rules.record_failure(doc, failure, self.policy),
            urgent=True,
        )
        count, transition = result if result is not None else (self.failing.get(canon, 0) + 1, None)
        threshold = self.policy.failure_threshold
        log.warning(
            "⚠️  Price fetch failed for %s (%d/%d): %s",
            symbol,
            min(count, threshold),
            threshold,
            message,
        )
        detail = {"count": count, "error": message, "kind": kind.value}
        emit(self._on_event, GuardEvent("failure", now, symbol, detail))
        if transition in (Transition.FROZEN, Transition.REFROZEN):
            self._announce_freeze(canon, now, refrozen=transition is Transition.REFROZEN)
            self._freeze_burst(now)
        return canon in self._book.frozen

    # -- seed API ----------------------------------------------------------------------------

    def record_price_fetch_failure(
        self, symbol: str, error: BaseException | str = "", *, kind: FailureKind | None = None
    ) -> bool:
        """Count a failure about ``symbol``; returns True when the symbol is (now) frozen.

        Transient, broker-wide failures (network, timeout, rate limit) and
        authentication errors do not count unless ``count_transient_failures``.
        """
        return self.record_failure(symbol, error, kind or classify(error))

    def record_price_fetch_success(self, symbol: str) -> None:
        """Seed API: a good price resets the count (and unfreezes a symbol whose cooldown
        passed)."""
        canon = canonical_symbol(symbol)
        self.record_success(canon, probe=rules.cooled_down(self._book, canon, self.clock()))

    def is_frozen(self, symbol: str) -> bool:
        """True for a frozen symbol whose cooldown has not passed, and for a restricted symbol."""
        now = self._refreshed()
        return rules.is_frozen(self._book, canonical_symbol(symbol), now)

    def is_restricted(self, symbol: str) -> bool:
        self._refresh()
        return canonical_symbol(symbol) in self._book.restricted

    def freeze(
        self,
        symbol: str,
        reason: str = "frozen by operator",
        *,
        for_hours: float | None = None,
        by: str | None = None,
    ) -> FrozenSymbol:
        """Freeze ``symbol`` by hand, whatever its failure count. It never expires unless given
        ``for_hours``: then, once they have passed, one price call probes it (success
        unfreezes)."""
        canon = canonical_symbol(symbol)
        now = self.clock()
        reason = redact(reason, self._secrets)
        who = redact(by or actor(), self._secrets)
        rules.check_freeze_hours(for_hours)  # refused before anything is written

        def record_of(count: int) -> FrozenSymbol:
            return rules.operator_record(symbol, reason, now, count, who, for_hours)

        newly = self._persist(
            rules.symbol_keys(canon), lambda doc: rules.freeze(doc, canon, record_of)
        )
        if newly is not False:
            self._announce_freeze(canon, now, refrozen=False)
        return self._book.frozen[canon]

    def unfreeze_symbol(self, symbol: str, reason: str = "") -> bool:
        """Unfreeze and reset the count; returns False when the symbol was not frozen."""
        canon = canonical_symbol(symbol)
        reason = redact(reason or "manual unfreeze", self._secrets)
        was = self._book.frozen.get(canon)
        removed = self._persist(
            rules.symbol_keys(canon), lambda doc: rules.unfreeze(doc, canon), replay=False
        )
        self.end_probe(canon)
        restricted = canon in self._book.restricted
        if removed is None and was is None:
            if restricted:
                log.warning(
                    "%s is not frozen but restricted: it stays untradable. Run `broker-guard "
                    "unrestrict %s` if it should trade",
                    symbol,
                    canon,
                )
            return False
        display = (was.symbol if was else None) or str((removed or {}).get("symbol", symbol))
        self._announce_unfreeze(canon, display, reason)
        return True

    def _announce_unfreeze(self, canon: str, display: str, reason: str) -> None:
        after = (
            f"but {canon} is restricted and stays untradable (`broker-guard unrestrict {canon}` "
            "to trade it)"
            if canon in self._book.restricted
            else "trading resumes"
        )
        log.warning(
            "✅ SYMBOL UNFROZEN: %s. Reason: %s. Failure count reset; %s.", display, reason, after
        )
        emit(self._on_event, GuardEvent("unfreeze", self.clock(), display, {"reason": reason}))

    unfreeze = unfreeze_symbol

    def restrict(self, symbol: str) -> None:
        canon = canonical_symbol(symbol)
        self._update_restricted(lambda symbols: symbols | {canon}, replay=True)
        log.warning("Symbol %s is now restricted: never traded until unrestricted", canon)

    def unrestrict(self, symbol: str) -> None:
        canon = canonical_symbol(symbol)
        self._update_restricted(lambda symbols: symbols - {canon}, replay=False)
        log.warning("Symbol %s is no longer restricted", canon)

    def get_frozen_symbols(self) -> dict[str, FrozenSymbol]:
        """Frozen symbols by the spelling they were first seen in."""
        self._refresh()
        with self._lock:  # the book's dicts change in place under this lock
            return {info.symbol: info for info in list(self._book.frozen.values())}

    def get_restricted_symbols(self) -> list[str]:
        self._refresh()
        return sorted(self._book.restricted)

    def get_failure_count(self, symbol: str) -> int:
        self._refresh()
        return self._book.counts.get(canonical_symbol(symbol), 0)

    def get_stats(self) -> dict[str, Any]:
        """The seed's monitoring figures: frozen count, pending freezes, review queue."""
        self._refresh()
        with self._lock:  # a copy: the book's dicts change in place under this lock
            book = Book(dict(self._book.frozen), dict(self._book.counts), self._book.restricted)
        pending = {s: n for s, n in book.counts.items() if s not in book.frozen}
        return {
            "frozen_count": len(book.frozen),
            "frozen_symbols": sorted(info.symbol for info in book.frozen.values()),
            "manual_review_required": sorted(
                i.symbol for i in book.frozen.values() if i.manual_review
            ),
            "pending_freezes": len(pending),
            "pending_symbols": dict(sorted(pending.items())),
            "restricted_count": len(book.restricted),
            "restricted_symbols": sorted(book.restricted),
            "failure_threshold": self.policy.failure_threshold,
            "cooldown_hours": self.policy.cooldown_hours,
            "store_problem": self.unreadable or self._store_problem,
            "damaged_records": dict(self.damaged),
            "halted": self.halted.as_dict() if self.halted is not None else None,
            "unattributed_damage": dict(self.unattributed),
        }

    def summary(self) -> dict[str, Any]:
        """Frozen count, halt and store problem as last read, without a refresh: what this guard
        sees, for its heartbeat."""
        return {
            "frozen_count": len(self._book.frozen),
            "halted": self.halted is not None,
            "store_problem": self.unreadable or self._store_problem,
        }

    # -- verdicts into errors and logs -------------------------------------------------------

    def _take_probe(self, info: FrozenSymbol, canon: str, now: float) -> bool:
        """Take the one probe slot; False when another call holds it."""
        with self._lock:
            if canon in self._probing:
                return False
            self._probing.add(canon)
        try:
            log.info(
                "Probing frozen symbol %s after its %.1fh cooldown",
                info.symbol,
                info.cooldown_hours,
            )
            emit(
                self._on_event,
                GuardEvent("probe", now, info.symbol, {"frozen_at": info.frozen_at_iso}),
            )
        except BaseException:  # a failing log handler must not leave the slot taken
            self.end_probe(canon)
            raise
        return True

    def _announce_freeze(self, canon: str, now: float, *, refrozen: bool) -> None:
        info = self._book.frozen.get(canon)
        if info is None:
            return
        until = (
            f"Symbol will remain frozen for {info.cooldown_hours:.1f}h, then one probe call decides"
            if info.auto_unfreeze
            else "Symbol stays frozen until an operator unfreezes it (auto-unfreeze is off)"
        )
        log.warning(
            "\n%s\n❄️  SYMBOL %s: %s\n%s\n   Reason: %s\n   Last Error: %s\n   Freeze Time: %s\n\n"
            "   ⚠️  MANUAL REVIEW REQUIRED\n   Possible causes:\n   - Symbol delisted from "
            "exchange\n"
            "   - Trading temporarily suspended\n   - Symbol mapping issue (e.g., AUT-USD)\n"
            "   - Network/API connectivity issue\n\n   %s\n"
            "   Use unfreeze_symbol() to manually unfreeze if resolved\n%s",
            BAR,
            "FROZEN AGAIN" if refrozen else "FROZEN",
            info.symbol,
            BAR,
            info.reason,
            info.last_error,
            info.frozen_at_iso,
            until,
            BAR,
        )
        emit(self._on_event, GuardEvent("freeze", now, info.symbol, info.as_dict()))

    # -- state -------------------------------------------------------------------------------

    def _persist(
        self,
        keys: list[tuple[str, str]],
        mutate: Callable[[dict[str, Any]], Any],
        *,
        replay: bool = True,
        urgent: bool = False,
    ) -> Any:
        """Apply ``mutate`` to the records ``keys`` in the shared state (one small write), then
        follow what changed.

        ``replay=False``: a change that loosens the guard (a reset, an unfreeze, a resume),
        which a shared store must not re-apply after an outage.
        """
        try:
            _doc, result = self.store.update(STATE, mutate, keys=keys, replay=replay, urgent=urgent)
            self._store_problem = None
        except StoreError as exc:
            self._store_problem = str(exc)
            log.error("freeze state not saved (%s); applying the change in this process only", exc)
            doc = rules.memory_document(self._book)
            result = mutate(doc)
            with self._lock:
                for section, key in keys:
                    self._apply(section, key, doc.get(section, {}).get(key))
            return result
        self._follow_quietly(STATE)
        return result

    def _update_restricted(self, change: Callable[[set[str]], set[str]], *, replay: bool) -> None:
        def apply(doc: dict[str, Any]) -> None:
            current, _problem = restricted_list(doc, self._book.restricted)
            doc["symbols"] = sorted(change(set(current)))

        self.store.update(RESTRICTED, apply, keys=[("symbols",)], replay=replay)
        self._follow_quietly(RESTRICTED)

    def _refreshed(self) -> float:
        """The time now, after re-reading shared state if a refresh is due (for a guarded call:
        only here, not in the stats a health probe or a scrape reads, does the heartbeat tick)."""
        if self.monotonic() >= self.next_refresh:
            self._refresh()
            if self.on_refresh is not None:
                self.on_refresh()
        return self.clock()

    def _refresh(self, *, force: bool = False) -> None:
        """Apply what other processes changed, in sequence order: at most once per
        ``refresh_interval`` on the monotonic clock (a wall-clock step never delays it), reading
        only what changed."""
        now = self.monotonic()
        if not force and now < self.next_refresh:
            return
        self.next_refresh = now + self._refresh_interval
        try:
            for name in (STATE, RESTRICTED):
                self._follow(name)
        except StoreError as exc:
            self._lost_state(str(exc))
            return
        if self.unreadable is not None:
            log.warning("freeze state is readable again; entries are decided by it again")
            self.unreadable = None
        self._share_unsaved_halt()

    def _follow_quietly(self, name: str) -> None:
        try:
            self._follow(name)
        except StoreError as exc:
            self._lost_state(str(exc))

    def _follow(self, name: str) -> None:
        since = self._cursors.get(name)
        got = self.store.changes(name, since) if since is not None else None
        if got is not None and name == STATE and any(len(c.path) != 2 for c in got[1]):
            got = None  # a whole section replaced: read it all again
        if got is None:
            cursor, found = self.store.load(name)
            with self._lock:
                if _newer(cursor, self._cursors.get(name), full=True):
                    self._cursors[name] = cursor
                    self._load_state(found) if name == STATE else self._load_restricted(found)
            return
        cursor, changes = got
        with self._lock:  # an older read never overwrites a newer one, in any thread
            seen = self._cursors.get(name)
            if not _newer(cursor, seen, full=False):
                return
            for change in changes:
                if seen is None or change.seq > seen[1]:
                    self._apply_change(name, change)
            self._cursors[name] = cursor

    def _apply_change(self, name: str, change: Change) -> None:
        if name == RESTRICTED:
            self._load_restricted({"symbols": change.value} if change.value is not None else {})
        else:
            self._apply(change.path[0], change.path[1], change.value)

    def _apply(self, section: str, canon: str, value: Any) -> None:
        """One record changed: the sets the fast path reads are changed in place, ``watched``
        first when a symbol is added and last when it is removed."""
        now = self.clock()
        if section == UNATTRIBUTED:
            self._mark_unattributed(canon, value)
            return
        if section == HALT_KEY[0]:
            if canon == HALT_KEY[1]:
                self._set_halt(*rules.read_halt(value, now))
            return
        if section == "frozen":
            if value is None:
                self._frozen.pop(canon, None)
                self.damaged.pop(canon, None)
                self._held_for_count.discard(canon)
            else:
                record, problem = rules.read_frozen(canon, value, now)
                self._held_for_count.discard(canon)  # a real record now holds it
                self._hold(canon, record, problem)
        elif section == "failures":
            count, held, problem = (
                (0, None, None) if value is None else rules.read_count(canon, value, now)
            )
            if count:
                self.watched.add(canon)
                self._counts[canon] = count
            else:
                self._counts.pop(canon, None)
            if held is not None and canon not in self._frozen:
                self._held_for_count.add(canon)
                self._hold(canon, held, problem)
            elif held is None and canon in self._held_for_count:  # the damaged count is gone
                self._held_for_count.discard(canon)
                self._frozen.pop(canon, None)
                self.damaged.pop(canon, None)
        self._settle(canon)

    def _mark_unattributed(self, where: str, value: Any) -> None:
        if value is None:
            self.unattributed.pop(where, None)
            return
        if where not in self.unattributed:
            log.critical(
                "shared state holds a damaged change that names no symbol (%s): entries refused "
                "on every symbol until an operator reviews it and runs `broker-guard "
                "acknowledge-damage` (exits still allowed)",
                where,
            )
        problem = value.get("quarantined") if isinstance(value, dict) else value
        self.unattributed[where] = str(problem)

    def _hold(self, canon: str, record: FrozenSymbol, problem: str | None) -> None:
        self.watched.add(canon)
        self.blocked.add(canon)
        self._frozen[canon] = record
        if problem:
            self._report_damage(canon, problem)

    def _settle(self, canon: str) -> None:
        if canon not in self._frozen and canon not in self._book.restricted:
            self.blocked.discard(canon)
        if canon not in self.blocked and canon not in self._counts:
            self.watched.discard(canon)

    def _report_damage(self, what: str, problem: str) -> None:
        if self.damaged.get(what) == problem:
            return
        self.damaged[what] = problem
        log.critical(
            "freeze state record %s is damaged (%s); its symbol is held frozen for review. "
            "Check the record, then `broker-guard unfreeze %s` once it is safe",
            what,
            problem,
            what,
        )

    def _unconfirmed(self, canon: str) -> StateUnconfirmedError:
        if self.unreadable is not None:
            return StateUnconfirmedError(
                f"order refused: {canon} cannot be confirmed tradable while the guard's shared "
                f"state cannot be read ({self.unreadable}); exits stay allowed. Fix the state's "
                "permissions or disk",
                symbol=canon,
            )
        where = "; ".join(sorted(self.unattributed))
        return StateUnconfirmedError(
            f"order refused: {canon} cannot be confirmed tradable: the shared state holds a "
            f"damaged change that names no symbol ({where}); exits stay allowed. Review it (kept "
            "aside in the state's quarantine), then `broker-guard acknowledge-damage`",
            symbol=canon,
        )

    # -- the halt ----------------------------------------------------------------------------

    def halt(self, reason: str, *, by: str | None = None, auto: bool = False) -> Halt:
        """Halt trading: every guard sharing this state refuses entries on every symbol
        (``TradingHaltedError``); exits, prices and balances still pass. Lasts until ``resume``.
        An automatic halt never replaces one already in place."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("a halt needs a reason: say why, for whoever resumes trading")
        now = self.clock()
        record = Halt(
            redact(reason.strip(), self._secrets), redact(by or actor(), self._secrets), now, auto
        )
        newly = self._persist([HALT_KEY], lambda doc: rules.halt(doc, record, replace=not auto))
        if self._store_problem is not None:
            self._keep_unsaved_halt(record)
        if newly or not auto:
            emit(self._on_event, GuardEvent("halt", now, None, record.as_dict()))
        return self.halted or record

    def resume(self, reason: str, *, by: str | None = None) -> bool:
        """Lift the halt; False when trading was not halted."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("a resume needs a reason: say what was checked")
        now = self.clock()
        record = Halt(
            redact(reason.strip(), self._secrets), redact(by or actor(), self._secrets), now
        )
        unsaved, self._unsaved_halt = self._unsaved_halt, None
        removed = self._persist(
            [HALT_KEY, rules.RESUMED_KEY], lambda doc: rules.resume(doc, record), replay=False
        )
        if removed is None and unsaved is not None:  # the shared state has none: it was ours
            with self._lock:
                self._set_book(Book(self._frozen, self._counts, self._book.restricted, None))
            removed = unsaved
        if removed is None:
            log.info("trading was not halted: nothing to resume")
            return False
        log.warning("▶️  TRADING RESUMED by %s: %s", record.by, record.reason)
        emit(self._on_event, GuardEvent("resume", now, None, record.as_dict()))
        return True

    def _keep_unsaved_halt(self, record: Halt) -> None:
        """The store refused the halt: it stays in force in this process, whatever a re-read of
        the shared state says, and is written again at each refresh until the store takes it."""
        self._unsaved_halt = self._unsaved_halt or record  # the book has it: applied locally
        log.critical(
            "trading halted in THIS PROCESS ONLY: the shared state refused the halt (%s); other "
            "guards still trade. It is written again at each refresh; halt them with "
            "`broker-guard halt --reason ...` once the store is back.",
            self._store_problem,
        )

    def _share_unsaved_halt(self) -> None:
        """Write again a halt the store refused; once saved, the shared record takes over."""
        record = self._unsaved_halt
        if record is None:
            return
        try:
            self.store.update(
                STATE, lambda doc: rules.halt(doc, record, replace=False), keys=[HALT_KEY]
            )
        except StoreError as exc:
            self._store_problem = str(exc)
            return
        self._store_problem = None
        self._unsaved_halt = None
        log.warning("the halt refused earlier is now in the shared state: every guard sees it")
        self._follow_quietly(STATE)

    def balance_failed(self, account: str, count: int, error: str) -> None:
        """The balance of ``account`` has failed ``count`` attempts in a row: halt when the halt
        policy says so (``trading_halt.after_balance_failures``)."""
        limit = self.halt_policy.after_balance_failures
        if limit is None or count < limit or self.halted is not None:
            return
        reason = f"the balance of {account} failed {count} times in a row (last: {error})"
        self.halt(reason, by=f"guard ({account})", auto=True)

    def _freeze_burst(self, now: float) -> None:
        """Many symbols frozen by the guard within a short window is a broker-wide problem, not
        a symbol's: halt when the halt policy says so (``trading_halt.after_freezes``)."""
        limit = self.halt_policy.after_freezes
        if limit is None or self.halted is not None:
            return
        since = now - self.halt_policy.freeze_window_minutes * 60
        with self._lock:
            recent = sorted(
                info.symbol
                for canon, info in self._book.frozen.items()
                if info.by_guard
                and info.frozen_at >= since
                and canon not in self.damaged
                and info.reason != rules.REFROZEN_REASON
            )
        if len(recent) >= limit:
            minutes = self.halt_policy.freeze_window_minutes
            shown = ", ".join(recent[:5]) + (", ..." if len(recent) > 5 else "")
            reason = (
                f"{len(recent)} symbols frozen within {minutes:g} min ({shown}): a broker-wide "
                "problem, not a symbol's"
            )
            self.halt(reason, by="guard", auto=True)

    def acknowledge_damage(self) -> list[str]:
        """An operator has reviewed the damaged changes that named no symbol (and re-applied any
        freeze they held): entries resume. Returns what was acknowledged."""
        with self._lock:
            marks = sorted(self.unattributed)
        if marks:
            self.store.update(
                STATE,
                lambda doc: doc.pop(UNATTRIBUTED, None),
                keys=[(UNATTRIBUTED, mark) for mark in marks],
                replay=False,
            )
            self._follow_quietly(STATE)
            log.warning("damaged state changes acknowledged by an operator: %s", marks)
        return marks

    def _lost_state(self, why: str) -> None:
        if self.unreadable is None:
            log.critical(
                "freeze state cannot be read (%s): entries refused on every symbol until it can "
                "(exits still allowed)",
                why,
            )
        self.unreadable = why

    def _load_state(self, doc: dict[str, Any]) -> None:
        with self._lock:  # the new sets are built aside, then swapped in
            book, malformed = rules.read_book(doc, self._book.restricted, self.clock())
            self._frozen, self._counts = dict(book.frozen), dict(book.counts)
            section = doc.get("frozen")
            stored: Mapping[str, Any] = section if isinstance(section, dict) else {}
            self._held_for_count = {c for c in self._frozen if c not in stored}
            self._set_book(Book(self._frozen, self._counts, book.restricted, book.halt))
            section = doc.get(UNATTRIBUTED)
            marks: Mapping[str, Any] = section if isinstance(section, dict) else {}
            for gone in set(self.unattributed) - set(marks):
                del self.unattributed[gone]
            for where, value in marks.items():
                self._mark_unattributed(where, value)
        for what, problem in malformed:
            self._report_damage(what, problem)

    def _load_restricted(self, doc: dict[str, Any]) -> None:
        symbols, problem = restricted_list(doc, self._book.restricted)
        if problem:
            self._report_damage("restricted_symbols", problem)
        else:
            self.damaged.pop("restricted_symbols", None)
        with self._lock:
            self._set_book(Book(self._frozen, self._counts, frozenset(symbols), self.halted))

    def _set_book(self, book: Book) -> None:
        with self._lock:
            if book.halt is None and self._unsaved_halt is not None:  # a re-read never drops it
                book = Book(book.frozen, book.counts, book.restricted, self._unsaved_halt)
            self._book = book
            self.failing = book.counts
            blocked = set(book.frozen) | book.restricted
            self.watched = blocked | set(book.counts)
            self.blocked = blocked
            self._note_halt(book.halt)

    def _set_halt(self, halted: Halt | None, problem: str | None) -> None:
        with self._lock:
            self._set_book(Book(self._frozen, self._counts, self._book.restricted, halted))
        if problem:
            self._report_damage("halt", problem)
        else:
            self.damaged.pop("halt", None)

    def _note_halt(self, halted: Halt | None) -> None:
        """Set the fast path's ``halted`` and say so when it changes (another process's halt
        too)."""
        was, self.halted = self.halted, halted
        if halted is not None and (was is None or was.at != halted.at):
            log.critical(
                "🛑 TRADING HALTED by %s at %s: %s. Entries refused on every symbol; exits "
                "allowed. Resume with `broker-guard resume --reason ...`",
                halted.by,
                utc_iso(halted.at),
                halted.reason,
            )
        elif halted is None and was is not None:
            log.warning("▶️  Trading resumed: entries are decided by the freeze rules again")


def restricted_list(doc: Mapping[str, Any], known: frozenset[str]) -> tuple[set[str], str | None]:
    """The restricted symbols a stored document names, and what is wrong with it if anything.

    No list yet: the shipped one. A list of the wrong shape keeps every symbol known so far
    and the shipped ones restricted, plus any it still names: restricting too much is safe.
    """
    symbols = doc.get("symbols")
    if symbols is None:
        return {canonical_symbol(s) for s in shipped_restricted_symbols()}, None
    if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols):
        return {canonical_symbol(s) for s in symbols if s.strip()}, None
    named = symbols if isinstance(symbols, list) else str(symbols).replace(",", " ").split()
    kept = set(known) | {canonical_symbol(s) for s in shipped_restricted_symbols()}
    kept |= {canonical_symbol(s) for s in named if isinstance(s, str) and s.strip()}
    return kept, f"the restricted list is {type(symbols).__name__}, not a list of symbols"


def _newer(cursor: Cursor, seen: Cursor | None, *, full: bool) -> bool:
    """Whether ``cursor`` is past ``seen`` (a store's generations only grow, so cursors compare
    as pairs); a full read of the same position is as good."""
    if seen is None:
        return True
    return cursor >= seen if full else cursor > seen


def _refusal(book: Book, canon: str, verdict: Verdict, *, order: bool) -> GuardRefusedError:
    """The error for a refused call, saying what to do."""
    prefix = "order refused: " if order else ""
    if verdict is Verdict.HALTED and book.halt is not None:
        halt = book.halt
        return TradingHaltedError(
            f"order refused: trading is halted since {utc_iso(halt.at)} by {halt.by} "
            f"({halt.reason}); exits stay allowed. Resume with `broker-guard resume --reason ...` "
            "once it is safe",
            symbol=canon,
        )
    if verdict is Verdict.RESTRICTED:
        hint = (
            "" if order else f"; remove it with `broker-guard unrestrict {canon}` if that is wrong"
        )
        return SymbolRestrictedError(
            f"{prefix}{canon} is restricted and is never traded{hint}", symbol=canon
        )
    info = book.frozen.get(canon) or rules.held_for_review(canon, "frozen", 0.0)
    what = (
        f"({info.reason}); exits stay allowed. Review"
        if order
        else f"({info.reason}; last error: {info.last_error}); review"
    )
    return SymbolFrozenError(
        f"{prefix}{info.symbol} is frozen since {info.frozen_at_iso} {what} it, then "
        f"unfreeze_symbol({info.symbol!r}) or `broker-guard unfreeze {info.symbol}`",
        symbol=info.symbol,
    )


__all__ = ["ALLOW", "PROBE", "FrozenSymbol", "SymbolFreezeManager", "shipped_restricted_symbols"]
