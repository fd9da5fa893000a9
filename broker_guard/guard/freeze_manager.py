"""The Symbol Freeze Manager (seed component; the seed's import path is ``broker_guard.symbol_freeze_manager``).

Counts consecutive failures that are about one symbol (bad symbol, not found,
invalid price), freezes the symbol at the threshold and flags it for manual
review. After the cooldown an auto-unfreezing symbol gets one probe call:
success unfreezes it, failure freezes it again. Restricted symbols are never
traded. State is shared through the store, so every process on a data
directory, and the operator's CLI, see one set of frozen symbols.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from broker_guard.classify import FailureKind, classify
from broker_guard.clock import Clock, system_clock, utc_iso
from broker_guard.config import FreezePolicy
from broker_guard.errors import StoreError, SymbolFrozenError, SymbolRestrictedError
from broker_guard.events import EventHook, GuardEvent, emit
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state.base import Store
from broker_guard.state.memory import MemoryStore
from broker_guard.symbols import canonical_symbol

log = redact_logger("broker_guard.freeze")

STATE = "symbol_freeze"
RESTRICTED = "restricted_symbols"
ALLOW = 0
PROBE = 1
_MAX_ERROR_CHARS = 300


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
        from broker_guard.clock import parse_utc_iso

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


def shipped_restricted_symbols() -> list[str]:
    """The restricted list the package ships (AUT-USD), used until a data dir has its own."""
    text = resources.files("broker_guard").joinpath("restricted_symbols.json").read_text(encoding="utf-8")
    return list(json.loads(text)["restricted_symbols"])


class SymbolFreezeManager:
    """Failure counts, freezes, cooldown probes and the restricted list, for one data directory."""

    def __init__(
        self,
        policy: FreezePolicy | None = None,
        *,
        store: Store | None = None,
        clock: Clock = system_clock,
        refresh_interval: float = 1.0,
        on_event: EventHook | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.policy = policy or FreezePolicy()
        self.store: Store = store if store is not None else MemoryStore()
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._on_event = on_event
        self._secrets = tuple(secrets)
        register_secrets(self._secrets)  # masked in every log line, by the package's log filter
        self._lock = threading.RLock()
        self._frozen: dict[str, FrozenSymbol] = {}
        self._counts: dict[str, int] = {}  # only symbols with a non-zero count
        self._restricted: frozenset[str] = frozenset()
        self._blocked: frozenset[str] = frozenset()  # frozen or restricted: the hot-path check
        self._probing: set[str] = set()
        self._versions: dict[str, Any] = {}
        self._next_refresh = -math.inf
        self._store_problem: str | None = None
        self._refresh(force=True)

    # -- hot path ------------------------------------------------------------------------------

    def admit(self, canon: str, *, entry: bool = True) -> int:
        """ALLOW, PROBE (the one call after a cooldown), or raise for a frozen/restricted symbol.

        ``entry=False`` is an exit (a sell or close): allowed on a frozen symbol,
        refused only on a restricted one when the caller asks via ``entry``.
        """
        now = self._clock()
        if now >= self._next_refresh:
            self._refresh(now=now)
        if canon not in self._blocked:
            return ALLOW
        return self._admit_blocked(canon, now, entry)

    def _admit_blocked(self, canon: str, now: float, entry: bool) -> int:
        if canon in self._restricted:
            if not entry:
                return ALLOW
            raise SymbolRestrictedError(
                f"{canon} is restricted and is never traded; remove it with `broker-guard unrestrict {canon}` if that is wrong",
                symbol=canon,
            )
        info = self._frozen[canon]
        if not entry:
            return ALLOW
        due = info.unfreeze_at
        if due is not None and now >= due:
            with self._lock:
                if canon not in self._probing:
                    self._probing.add(canon)
                    log.info("Probing frozen symbol %s after its %.1fh cooldown", info.symbol, info.cooldown_hours)
                    emit(self._on_event, GuardEvent("probe", now, info.symbol, {"frozen_at": info.frozen_at_iso}))
                    return PROBE
        raise SymbolFrozenError(
            f"{info.symbol} is frozen since {info.frozen_at_iso} ({info.reason}; last error: {info.last_error}); "
            f"review it, then unfreeze_symbol({info.symbol!r}) or `broker-guard unfreeze {info.symbol}`",
            symbol=info.symbol,
        )

    def check_entry(self, canon: str) -> None:
        """Refuse an order that opens or adds to a position on a frozen or restricted symbol.

        An order is never the probe: after a cooldown a price call must succeed first.
        """
        now = self._clock()
        if now >= self._next_refresh:
            self._refresh(now=now)
        if canon not in self._blocked:
            return
        if canon in self._restricted:
            raise SymbolRestrictedError(f"order refused: {canon} is restricted and is never traded", symbol=canon)
        info = self._frozen[canon]
        emit(self._on_event, GuardEvent("refused", now, info.symbol, {"why": "entry order on a frozen symbol"}))
        raise SymbolFrozenError(
            f"order refused: {info.symbol} is frozen since {info.frozen_at_iso} ({info.reason}); exits stay allowed. "
            f"Review it, then unfreeze_symbol({info.symbol!r}) or `broker-guard unfreeze {info.symbol}`",
            symbol=info.symbol,
        )

    def record_success(self, canon: str, *, probe: bool = False) -> None:
        """Reset the failure count; a successful probe unfreezes. Cheap when there is nothing to reset."""
        if probe:
            with self._lock:
                self._probing.discard(canon)
            self.unfreeze_symbol(canon, reason="probe call succeeded after the cooldown")
        elif canon in self._counts:
            self._persist(lambda data: data.setdefault("failures", {}).pop(canon, None), replay=False)

    def end_probe(self, canon: str) -> None:
        """Release a probe slot without a verdict (the call was cancelled or failed transiently)."""
        with self._lock:
            self._probing.discard(canon)

    # -- seed API ------------------------------------------------------------------------------

    def record_price_fetch_failure(self, symbol: str, error: BaseException | str = "", *, kind: FailureKind | None = None) -> bool:
        """Count a failure about ``symbol``; returns True when the symbol is (now) frozen.

        Transient, broker-wide failures (network, timeout, rate limit) and
        authentication errors do not count unless ``count_transient_failures``.
        """
        canon = canonical_symbol(symbol)
        kind = kind or classify(error)
        if kind is FailureKind.AUTH or (kind.retryable and not self.policy.count_transient_failures):
            log.debug("price failure for %s not counted toward freezing: %s is %s", symbol, error, kind.value)
            return canon in self._frozen
        message = redact(error, self._secrets)[:_MAX_ERROR_CHARS] or kind.value
        now = self._clock()
        probing = canon in self._probing
        with self._lock:
            self._probing.discard(canon)
        result = self._persist(lambda data: self._count_failure(data, canon, symbol, message, now, probing))
        count, transition = result if result is not None else (self._counts.get(canon, 0) + 1, None)
        threshold = self.policy.failure_threshold
        log.warning("⚠️  Price fetch failed for %s (%d/%d): %s", symbol, min(count, threshold), threshold, message)
        emit(self._on_event, GuardEvent("failure", now, symbol, {"count": count, "error": message, "kind": kind.value}))
        if transition is not None:
            info = self._frozen.get(canon)
            if info is not None:
                self._log_freeze(info, refrozen=transition == "refrozen")
                emit(self._on_event, GuardEvent("freeze", now, symbol, info.as_dict()))
        return canon in self._frozen

    def record_price_fetch_success(self, symbol: str) -> None:
        """Seed API: a good price resets the count (and unfreezes a symbol whose cooldown passed)."""
        canon = canonical_symbol(symbol)
        info = self._frozen.get(canon)
        due = info.unfreeze_at if info else None
        self.record_success(canon, probe=due is not None and self._clock() >= due)

    def is_frozen(self, symbol: str) -> bool:
        """True for a frozen symbol whose cooldown has not passed, and for a restricted symbol."""
        canon = canonical_symbol(symbol)
        now = self._clock()
        if now >= self._next_refresh:
            self._refresh(now=now)
        if canon in self._restricted:
            return True
        info = self._frozen.get(canon)
        if info is None:
            return False
        due = info.unfreeze_at
        return due is None or now < due

    def is_restricted(self, symbol: str) -> bool:
        self._refresh()
        return canonical_symbol(symbol) in self._restricted

    def freeze(self, symbol: str, reason: str = "frozen by operator", *, manual_review: bool = True) -> FrozenSymbol:
        """Freeze ``symbol`` now, whatever its failure count."""
        canon = canonical_symbol(symbol)
        now = self._clock()
        reason = redact(reason, self._secrets)

        def apply(data: dict[str, Any]) -> bool:
            frozen = data.setdefault("frozen", {})
            was = canon in frozen
            count = int(data.get("failures", {}).get(canon, {}).get("count", 0))
            frozen[canon] = self._record(symbol, reason, reason, now, count, manual_review).as_dict()
            return not was

        newly = self._persist(apply)
        info = self._frozen[canon]
        if newly is not False:
            self._log_freeze(info, refrozen=False)
            emit(self._on_event, GuardEvent("freeze", now, info.symbol, info.as_dict()))
        return info

    def unfreeze_symbol(self, symbol: str, reason: str = "") -> bool:
        """Unfreeze and reset the count; returns False when the symbol was not frozen."""
        canon = canonical_symbol(symbol)
        reason = redact(reason or "manual unfreeze", self._secrets)

        def apply(data: dict[str, Any]) -> dict[str, Any] | None:
            data.setdefault("failures", {}).pop(canon, None)
            removed: dict[str, Any] | None = data.setdefault("frozen", {}).pop(canon, None)
            return removed

        was = self._frozen.get(canon)
        removed = self._persist(apply, replay=False)
        with self._lock:
            self._probing.discard(canon)
        if removed is None and was is None:
            return False
        display = (was.symbol if was else None) or str((removed or {}).get("symbol", symbol))
        log.warning("✅ SYMBOL UNFROZEN: %s. Reason: %s. Failure count reset; trading resumes.", display, reason)
        emit(self._on_event, GuardEvent("unfreeze", self._clock(), display, {"reason": reason}))
        return True

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
        return {info.symbol: info for info in self._frozen.values()}

    def get_restricted_symbols(self) -> list[str]:
        self._refresh()
        return sorted(self._restricted)

    def get_failure_count(self, symbol: str) -> int:
        self._refresh()
        return self._counts.get(canonical_symbol(symbol), 0)

    def get_stats(self) -> dict[str, Any]:
        """The seed's monitoring figures: frozen count, pending freezes, review queue."""
        self._refresh()
        pending = {s: n for s, n in self._counts.items() if s not in self._frozen}
        return {
            "frozen_count": len(self._frozen),
            "frozen_symbols": sorted(info.symbol for info in self._frozen.values()),
            "manual_review_required": sorted(i.symbol for i in self._frozen.values() if i.manual_review),
            "pending_freezes": len(pending),
            "pending_symbols": dict(sorted(pending.items())),
            "restricted_count": len(self._restricted),
            "restricted_symbols": sorted(self._restricted),
            "failure_threshold": self.policy.failure_threshold,
            "cooldown_hours": self.policy.cooldown_hours,
            "store_problem": self._store_problem,
        }

    # -- state ---------------------------------------------------------------------------------

    def _record(self, symbol: str, reason: str, last_error: str, now: float, count: int, manual: bool) -> FrozenSymbol:
        return FrozenSymbol(
            symbol=symbol,
            reason=reason,
            last_error=last_error,
            frozen_at=now,
            consecutive_failures=count,
            manual_review=manual or self.policy.manual_review_required,
            auto_unfreeze=self.policy.auto_unfreeze,
            cooldown_hours=self.policy.cooldown_hours,
        )

    def _count_failure(
        self, data: dict[str, Any], canon: str, symbol: str, message: str, now: float, probing: bool
    ) -> tuple[int, str | None]:
        failures = data.setdefault("failures", {})
        frozen = data.setdefault("frozen", {})
        entry = failures.setdefault(canon, {"count": 0})
        entry.update(count=int(entry.get("count", 0)) + 1, last_error=message, last_failure_at=utc_iso(now), symbol=symbol)
        count = int(entry["count"])
        if canon in frozen:
            if not probing:
                return count, None
            old = frozen[canon]
            display = str(old.get("symbol", symbol))
            reason = "probe call failed after the cooldown"
            frozen[canon] = self._record(display, reason, message, now, count, bool(old.get("manual_review", True))).as_dict()
            return count, "refrozen"
        if count >= self.policy.failure_threshold:
            reason = f"{count} consecutive price fetch failures"
            frozen[canon] = self._record(symbol, reason, message, now, count, False).as_dict()
            return count, "frozen"
        return count, None

    def _persist(self, mutate: Any, *, replay: bool = True) -> Any:
        """Apply ``mutate`` to the shared state; a lock timeout keeps the change in memory, loudly.

        ``replay=False``: a change that loosens the guard (a reset, an unfreeze), which a
        shared store must not re-apply after an outage.
        """
        try:
            data, result = self.store.update(STATE, mutate, replay=replay)
            self._store_problem = None
        except StoreError as exc:
            self._store_problem = str(exc)
            log.error("freeze state not saved (%s); applying the change in this process only", exc)
            data = self._memory_doc()
            result = mutate(data)
        self._load_state(data)
        return result

    def _memory_doc(self) -> dict[str, Any]:
        return {
            "failures": {s: {"count": n} for s, n in self._counts.items()},
            "frozen": {s: info.as_dict() for s, info in self._frozen.items()},
        }

    def _update_restricted(self, change: Any, *, replay: bool) -> None:
        shipped = shipped_restricted_symbols()

        def apply(data: dict[str, Any]) -> None:
            current = {canonical_symbol(s) for s in data.get("symbols", shipped)}
            data["symbols"] = sorted(change(current))

        data, _ = self.store.update(RESTRICTED, apply, replay=replay)
        self._load_restricted(data)

    def _refresh(self, *, now: float | None = None, force: bool = False) -> None:
        """Reload state another process changed: at most once per ``refresh_interval``, one stat each."""
        now = self._clock() if now is None else now
        if not force and now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_interval
        for name, loader in ((STATE, self._load_state), (RESTRICTED, self._load_restricted)):
            version = self.store.version(name)
            if force or version != self._versions.get(name):
                try:
                    data = self.store.read(name)
                except StoreError as exc:  # a lock held past its timeout: trade on what this process knows
                    self._store_problem = str(exc)
                    log.warning("freeze state not reloaded (%s); using this process's copy until the next refresh", exc)
                    continue
                self._versions[name] = version
                loader(data)

    def _load_state(self, data: dict[str, Any]) -> None:
        frozen: dict[str, FrozenSymbol] = {}
        for canon, raw in data.get("frozen", {}).items():
            try:
                frozen[canon] = FrozenSymbol.from_dict(raw)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("frozen record for %s is malformed (%s); keeping it frozen for review", canon, exc)
                frozen[canon] = FrozenSymbol(canon, "malformed record", str(exc), self._clock(), 0, True, False, 0.0)
        counts = {}
        for canon, entry in data.get("failures", {}).items():
            count = entry.get("count", 0) if isinstance(entry, dict) else 0
            if isinstance(count, int) and count > 0:
                counts[canon] = count
        with self._lock:
            self._frozen = frozen
            self._counts = counts
            self._blocked = frozenset(frozen) | self._restricted

    def _load_restricted(self, data: dict[str, Any]) -> None:
        symbols = data.get("symbols")
        if not isinstance(symbols, list):
            symbols = shipped_restricted_symbols()
        with self._lock:
            self._restricted = frozenset(canonical_symbol(s) for s in symbols if isinstance(s, str) and s.strip())
            self._blocked = frozenset(self._frozen) | self._restricted

    def _log_freeze(self, info: FrozenSymbol, *, refrozen: bool) -> None:
        bar = "=" * 70
        until = (
            f"Symbol will remain frozen for {info.cooldown_hours:.1f}h, then one probe call decides"
            if info.auto_unfreeze
            else "Symbol stays frozen until an operator unfreezes it (auto-unfreeze is off)"
        )
        log.warning(
            "\n%s\n❄️  SYMBOL %s: %s\n%s\n   Reason: %s\n   Last Error: %s\n   Freeze Time: %s\n\n"
            "   ⚠️  MANUAL REVIEW REQUIRED\n   Possible causes:\n   - Symbol delisted from exchange\n"
            "   - Trading temporarily suspended\n   - Symbol mapping issue (e.g., AUT-USD)\n"
            "   - Network/API connectivity issue\n\n   %s\n   Use unfreeze_symbol() to manually unfreeze if resolved\n%s",
            bar,
            "FROZEN AGAIN" if refrozen else "FROZEN",
            info.symbol,
            bar,
            info.reason,
            info.last_error,
            info.frozen_at_iso,
            until,
            bar,
        )
