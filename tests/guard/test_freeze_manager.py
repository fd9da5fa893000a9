from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import fail_price_calls
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker_guard import (
    ConfigError,
    JsonFileStore,
    MemoryStore,
    SymbolFrozenError,
    SymbolRestrictedError,
)
from broker_guard.config import FreezePolicy
from broker_guard.guard.freeze_manager import ALLOW, PROBE
from broker_guard.symbol_freeze_manager import SymbolFreezeManager, get_symbol_freeze_manager
from broker_guard.testing import FakeClock


def manager(clock: FakeClock, store: Any = None, **policy: Any) -> SymbolFreezeManager:
    return SymbolFreezeManager(FreezePolicy(**policy), store=store or MemoryStore(), clock=clock)


def test_freezes_at_the_threshold_and_logs_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    m = manager(clock)
    with caplog.at_level(logging.WARNING, logger="broker_guard.freeze"):
        assert not m.record_price_fetch_failure("AUTX-USD", "Price not available")
        assert not m.record_price_fetch_failure("AUTX-USD", "Price not available")
        assert m.record_price_fetch_failure("AUTX-USD", "Price not available")
    assert m.is_frozen("AUTX-USD")
    assert "Price fetch failed for AUTX-USD (1/3): Price not available" in caplog.text
    assert "Price fetch failed for AUTX-USD (3/3)" in caplog.text
    banners = [r for r in caplog.records if "SYMBOL FROZEN: AUTX-USD" in r.getMessage()]
    assert len(banners) == 1
    banner = banners[0].getMessage()
    assert (
        "Reason: 3 consecutive price fetch failures" in banner
        and "MANUAL REVIEW REQUIRED" in banner
    )
    assert "Freeze Time: 2026-01-01T00:00:00+00:00" in banner


def test_symbols_are_compared_canonically(clock: FakeClock) -> None:
    m = manager(clock)
    for spelling in ("btc/usd", "BTC-USD", "BTC_USD"):
        m.record_price_fetch_failure(spelling, "invalid symbol")
    assert m.is_frozen("BTC/USD") and m.get_failure_count("btc-usd") == 3


def test_success_resets_the_count(clock: FakeClock) -> None:
    m = manager(clock)
    m.record_price_fetch_failure("X-USD", "not found")
    m.record_price_fetch_failure("X-USD", "not found")
    m.record_price_fetch_success("X-USD")
    m.record_price_fetch_failure("X-USD", "not found")
    assert not m.is_frozen("X-USD") and m.get_failure_count("X-USD") == 1


@pytest.mark.parametrize(
    "error",
    [ConnectionError("reset"), TimeoutError("timed out"), "Network error", "429 Too Many Requests"],
)
def test_broker_wide_transient_failures_do_not_count(clock: FakeClock, error: Any) -> None:
    m = manager(clock)
    for _ in range(10):
        m.record_price_fetch_failure("BTC-USD", error)
    assert not m.is_frozen("BTC-USD") and m.get_failure_count("BTC-USD") == 0


def test_transient_failures_count_when_configured(clock: FakeClock) -> None:
    m = manager(clock, count_transient_failures=True)
    for _ in range(3):
        m.record_price_fetch_failure("BTC-USD", ConnectionError("reset"))
    assert m.is_frozen("BTC-USD")


def test_an_outage_through_the_guard_freezes_nothing(make_guard: Any, paper: Any) -> None:
    guard = make_guard(paper)
    paper.fail_next("get_current_price", 50, "network")
    for _ in range(10):
        for symbol in ("BTC-USD", "ETH-USD", "SOL-USD"):
            with pytest.raises(ConnectionError):
                guard.get_current_price(symbol)
    assert guard.freeze_manager.get_stats()["frozen_count"] == 0


def _freeze(m: SymbolFreezeManager, symbol: str = "AUTX-USD") -> None:
    for _ in range(m.policy.failure_threshold):
        m.record_price_fetch_failure(symbol, "Price not available")


def _delist_and_freeze(guard: Any, paper: Any, symbol: str = "ETH-USD") -> None:
    """Freeze ``symbol`` the way production does: three failing price calls through the guard."""
    paper.delist(symbol)
    fail_price_calls(guard, symbol)


def test_cooldown_probe_success_unfreezes(make_guard: Any, paper: Any, clock: FakeClock) -> None:
    guard = make_guard(paper)
    _delist_and_freeze(guard, paper)
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("ETH-USD")
    paper.relist("ETH-USD")
    clock.advance(23 * 3600)
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("ETH-USD")  # still cooling down
    clock.advance(3600)
    assert guard.get_current_price("ETH-USD") == 2500.0  # the probe
    assert not guard.freeze_manager.is_frozen("ETH-USD")


def test_cooldown_probe_failure_freezes_again(
    make_guard: Any, paper: Any, clock: FakeClock
) -> None:
    guard = make_guard(paper)
    _delist_and_freeze(guard, paper)
    clock.advance(24 * 3600)
    calls_before = paper.calls["get_current_price"]
    with pytest.raises(Exception, match="Price not available"):
        guard.get_current_price("ETH-USD")  # the probe reaches the broker once and fails
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("ETH-USD")  # frozen again, for a new cooldown
    assert paper.calls["get_current_price"] == calls_before + 1
    frozen = guard.freeze_manager.get_frozen_symbols()["ETH-USD"]
    assert frozen.frozen_at == clock.now and "probe" in frozen.reason


def test_only_one_probe_at_a_time(clock: FakeClock) -> None:
    m = manager(clock)
    _freeze(m)
    clock.advance(24 * 3600)
    assert m.admit("AUTX/USD") == PROBE
    with pytest.raises(SymbolFrozenError):
        m.admit("AUTX/USD")


def test_transient_failure_of_a_probe_gives_no_verdict(
    make_guard: Any, paper: Any, clock: FakeClock
) -> None:
    guard = make_guard(paper)
    guard.freeze_manager.freeze("SOL-USD", "operator test", for_hours=24)
    clock.advance(25 * 3600)
    paper.fail_next("get_current_price", 1, "network")
    with pytest.raises(ConnectionError):
        guard.get_current_price("SOL-USD")
    assert guard.get_current_price("SOL-USD") == 100.0  # the next call probes again and unfreezes
    assert not guard.freeze_manager.is_frozen("SOL-USD")


def test_manual_only_when_auto_unfreeze_is_off(clock: FakeClock) -> None:
    m = manager(clock, auto_unfreeze=False)
    _freeze(m)
    clock.advance(365 * 24 * 3600)
    assert m.is_frozen("AUTX-USD")
    with pytest.raises(SymbolFrozenError):
        m.admit("AUTX/USD")
    assert m.unfreeze_symbol("AUTX-USD", reason="Issue resolved")
    assert m.admit("AUTX/USD") == ALLOW and m.get_failure_count("AUTX-USD") == 0


def test_restricted_symbols_ship_with_aut_usd_and_are_editable(
    tmp_path: Path, clock: FakeClock
) -> None:
    m = manager(clock, store=JsonFileStore(tmp_path))
    assert m.is_restricted("AUT-USD") and m.is_frozen("aut/usd")
    with pytest.raises(SymbolRestrictedError):
        m.admit("AUT/USD")
    m.restrict("XYZ-USD")
    m.unrestrict("AUT-USD")
    again = manager(clock, store=JsonFileStore(tmp_path))
    assert again.get_restricted_symbols() == ["XYZ/USD"]


def test_entry_refused_exit_allowed(make_guard: Any, paper: Any) -> None:
    paper.holdings["SOL"] = 1.0
    guard = make_guard(paper)
    guard.freeze_manager.freeze("SOL-USD", "test")
    with pytest.raises(SymbolFrozenError, match="order refused"):
        guard.place_market_order("SOL-USD", "buy", 0.1)
    assert paper.orders == []  # never reached the broker
    assert guard.place_market_order("SOL-USD", "sell", 0.5)["status"] == "filled"
    assert guard.close_position("SOL-USD")["status"] == "filled"


def test_external_unfreeze_is_seen_within_the_refresh_interval(
    tmp_path: Path, clock: FakeClock
) -> None:
    bot = manager(clock, store=JsonFileStore(tmp_path))
    _freeze(bot)
    operator = manager(clock, store=JsonFileStore(tmp_path))
    assert operator.unfreeze_symbol("AUTX-USD", "resolved")
    clock.advance(1.0)
    assert bot.admit("AUTX/USD") == ALLOW


def test_frozen_symbols_survive_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    _freeze(manager(clock, store=JsonFileStore(tmp_path)))
    frozen = manager(clock, store=JsonFileStore(tmp_path)).get_frozen_symbols()
    assert list(frozen) == ["AUTX-USD"] and frozen["AUTX-USD"].consecutive_failures == 3


def test_frozen_price_returns_none_when_configured(make_guard: Any, paper: Any) -> None:
    guard = make_guard(paper, freeze={"frozen_returns_none": True})
    guard.freeze_manager.freeze("ETH-USD")
    assert guard.get_current_price("ETH-USD") is None
    assert guard.get_current_price("AUT-USD") is None


@pytest.mark.parametrize("bad", [None, 0, -1.0, float("nan"), "n/a", "inf", True])
def test_invalid_prices_are_failures(make_guard: Any, bad: Any) -> None:
    class Bad:
        def get_current_price(self, symbol: str) -> Any:
            return bad

    guard = make_guard(Bad())
    for _ in range(3):
        with pytest.raises(Exception, match="invalid price"):
            guard.get_current_price("ABC-USD")
    assert guard.freeze_manager.is_frozen("ABC-USD")


def test_seed_snippet_runs_as_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from broker_guard.testing import PaperBroker

    broker = PaperBroker(prices={"BTC-USD": 50_000.0})
    manager = get_symbol_freeze_manager(failure_threshold=3, cooldown_hours=24.0, data_dir="./data")
    for _ in range(3):
        try:
            price = broker.get_current_price("AUTX-USD")  # noqa: F841
        except Exception as e:
            manager.record_price_fetch_failure("AUTX-USD", str(e))
    manager.record_price_fetch_success("BTC-USD")
    if manager.is_frozen("AUTX-USD"):
        print("AUTX-USD is frozen - skipping trade")
    frozen = manager.get_frozen_symbols()
    for symbol, info in frozen.items():
        print(f"{symbol}: {info.consecutive_failures} failures")
    manager.unfreeze_symbol("AUTX-USD", reason="Issue resolved")
    stats = manager.get_stats()
    out = capsys.readouterr().out
    assert "AUTX-USD is frozen - skipping trade" in out and "AUTX-USD: 3 failures" in out
    assert stats["frozen_count"] == 0 and (tmp_path / "data" / "symbol_freeze.journal").exists()
    with pytest.raises(ConfigError):
        get_symbol_freeze_manager(failure_threshold=5)


class FreezeModel(RuleBasedStateMachine):
    """The manager against a model: counts, threshold, cooldown probes, manual unfreezes, clock
    jumps."""

    THRESHOLD = 3
    COOLDOWN = 3600.0
    SYMBOLS = ("AAA-USD", "BBB-USD")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.m = SymbolFreezeManager(
            FreezePolicy(failure_threshold=self.THRESHOLD, cooldown_hours=self.COOLDOWN / 3600),
            store=MemoryStore(),
            clock=self.clock,
        )
        self.count = dict.fromkeys(self.SYMBOLS, 0)
        self.frozen_at: dict[str, float | None] = dict.fromkeys(self.SYMBOLS)

    def _canon(self, s: str) -> str:
        return s.replace("-", "/")

    @rule(symbol=st.sampled_from(SYMBOLS), ok=st.booleans())
    def price_call(self, symbol: str, ok: bool) -> None:
        frozen_at = self.frozen_at[symbol]
        try:
            mode = self.m.admit(self._canon(symbol))
        except SymbolFrozenError:
            assert frozen_at is not None and self.clock.now < frozen_at + self.COOLDOWN
            return
        if frozen_at is not None:
            assert mode == PROBE and self.clock.now >= frozen_at + self.COOLDOWN
        if ok:
            self.m.record_success(self._canon(symbol), probe=mode == PROBE)
            self.count[symbol] = 0
            self.frozen_at[symbol] = None
        else:
            self.m.record_price_fetch_failure(symbol, "not found")
            self.count[symbol] += 1
            if mode == PROBE or self.count[symbol] >= self.THRESHOLD:
                self.frozen_at[symbol] = self.clock.now

    @rule(symbol=st.sampled_from(SYMBOLS))
    def operator_unfreeze(self, symbol: str) -> None:
        self.m.unfreeze_symbol(symbol, "operator")
        self.count[symbol] = 0
        self.frozen_at[symbol] = None

    @rule(seconds=st.sampled_from([1.0, 600.0, 3599.0, 3600.0, 86_400.0]))
    def clock_jump(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def agrees_with_model(self) -> None:
        frozen = {
            s.replace("/", "-") for s in (i.symbol for i in self.m.get_frozen_symbols().values())
        }
        assert frozen == {s for s, at in self.frozen_at.items() if at is not None}
        for symbol in self.SYMBOLS:
            assert self.m.get_failure_count(symbol) == self.count[symbol]


TestFreezeModel = FreezeModel.TestCase


def test_a_restriction_loaded_by_another_thread_during_a_state_reload_is_kept(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload of the freeze state builds its book from the restricted list; a restriction
    another thread loads meanwhile must survive it (it used to be overwritten by the stale list,
    and entry orders on the symbol passed until the list changed again)."""
    import threading

    from broker_guard.core import freeze as rules

    m = manager(clock)
    real_read_book = rules.read_book
    other = threading.Thread(target=m.restrict, args=("NEW-USD",))

    def read_book_while_another_thread_restricts(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(rules, "read_book", real_read_book)
        book = real_read_book(*args, **kwargs)
        other.start()
        other.join(timeout=0.2)  # bounded: with the fix the other thread waits for this reload
        return book

    monkeypatch.setattr(rules, "read_book", read_book_while_another_thread_restricts)
    monkeypatch.setattr(m.store, "changes", lambda name, since: None)  # every refresh reads all
    clock.advance(2.0)
    m.is_frozen("SOL-USD")  # reloads the freeze state
    other.join()
    assert m.is_restricted("NEW-USD")
    with pytest.raises(SymbolRestrictedError):
        m.check_entry("NEW/USD")


def test_an_operator_freeze_of_a_symbol_held_for_a_damaged_count_survives_later_counts(
    tmp_path: Path,
) -> None:
    import json

    from broker_guard import JsonFileStore

    doc = {"schema_version": 1, "data": {"failures": {"SIG/USD": {"count": "5"}}}}
    (tmp_path / "symbol_freeze.json").write_text(json.dumps(doc))
    bot = SymbolFreezeManager(store=JsonFileStore(tmp_path), refresh_interval=0.0)
    operator = SymbolFreezeManager(store=JsonFileStore(tmp_path), refresh_interval=0.0)
    operator.freeze("SIG-USD", "delisted")
    operator.record_price_fetch_failure("SIG-USD", "bad symbol")  # a valid count replaces it
    with pytest.raises(SymbolFrozenError):
        bot.check_entry("SIG/USD")


def test_readers_iterating_the_book_never_crash_while_it_changes() -> None:
    import threading

    m = SymbolFreezeManager(refresh_interval=3600)
    for i in range(100):
        m.freeze(f"S{i}-USD", "x")
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        i = 0
        while not stop.is_set():
            m.unfreeze_symbol(f"S{i % 100}-USD")
            m.freeze(f"S{i % 100}-USD", "x")
            m.record_price_fetch_failure(f"F{i % 300}-USD", "symbol not found")
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(300):
            try:
                m.get_stats()
                m.get_frozen_symbols()
            except RuntimeError as exc:
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert errors == []


# -- freezes mean what was said (issue 14, item 4) ----------------------------------------------


def test_an_operator_freeze_is_still_frozen_after_25_hours(
    make_guard: Any, paper: Any, clock: FakeClock
) -> None:
    """Before: the first good price after the 24 h cooldown lifted a "legal hold" and a buy
    filled."""
    guard = make_guard(paper, freeze={"auto_unfreeze": True, "cooldown_hours": 24.0})
    info = guard.freeze_manager.freeze("SOL-USD", "legal hold", by="alice@desk")
    assert info.frozen_by == "alice@desk" and info.unfreeze_at is None
    clock.advance(25 * 3600)
    with pytest.raises(SymbolFrozenError, match="legal hold"):
        guard.get_current_price("SOL-USD")
    with pytest.raises(SymbolFrozenError):
        guard.place_market_order("SOL-USD", "buy", 0.1)
    assert guard.freeze_manager.is_frozen("SOL-USD")
    assert paper.orders == []


def test_a_freeze_for_two_hours_is_probed_after_two_hours(
    make_guard: Any, paper: Any, clock: FakeClock
) -> None:
    guard = make_guard(paper, freeze={"auto_unfreeze": False})  # the guard's own setting
    guard.freeze_manager.freeze("SOL-USD", "maintenance", for_hours=2)
    clock.advance(2 * 3600 - 1)
    with pytest.raises(SymbolFrozenError):
        guard.get_current_price("SOL-USD")
    clock.advance(2)
    assert guard.get_current_price("SOL-USD") == 100.0  # the probe: unfrozen
    assert not guard.freeze_manager.is_frozen("SOL-USD")


@pytest.mark.parametrize("hours", [0, -1, float("nan"), float("inf")])
def test_a_freeze_duration_must_be_positive_and_finite(clock: FakeClock, hours: float) -> None:
    m = manager(clock)
    with pytest.raises(ValueError, match="duration"):
        m.freeze("SOL-USD", "x", for_hours=hours)
    assert m.get_frozen_symbols() == {}


def test_auto_unfreeze_applies_only_to_the_guards_own_freezes_and_only_when_configured(
    make_guard: Any, paper: Any, clock: FakeClock
) -> None:
    guard = make_guard(paper, freeze={"auto_unfreeze": False, "cooldown_hours": 1.0})
    paper.delist("ETH-USD")
    fail_price_calls(guard, "ETH-USD")
    paper.relist("ETH-USD")
    clock.advance(48 * 3600)
    with pytest.raises(SymbolFrozenError):  # configured off: never probed
        guard.get_current_price("ETH-USD")
    assert guard.freeze_manager.get_frozen_symbols()["ETH-USD"].frozen_by == "guard"


def test_a_record_from_before_authors_keeps_an_operator_freeze_frozen(
    tmp_path: Path, clock: FakeClock
) -> None:
    """0.1 records name no author: one with a reason the guard never gives was frozen by hand,
    and never expires; the guard's own keep their cooldown."""
    old = {"frozen_at": "2025-01-01T00:00:00+00:00", "auto_unfreeze": True, "cooldown_hours": 1.0}
    store = JsonFileStore(tmp_path)
    store.update(
        "symbol_freeze",
        lambda doc: doc.update(
            frozen={
                "SOL/USD": {**old, "symbol": "SOL-USD", "reason": "legal hold"},
                "ETH/USD": {
                    **old,
                    "symbol": "ETH-USD",
                    "reason": "3 consecutive price fetch failures",
                },
            }
        ),
    )
    m = manager(clock, JsonFileStore(tmp_path))
    frozen = m.get_frozen_symbols()
    assert frozen["SOL-USD"].frozen_by == "operator" and frozen["SOL-USD"].unfreeze_at is None
    assert frozen["ETH-USD"].frozen_by == "guard" and frozen["ETH-USD"].unfreeze_at is not None
    assert m.admit("ETH/USD") == PROBE
    with pytest.raises(SymbolFrozenError):
        m.admit("SOL/USD")


def test_unfreezing_a_restricted_symbol_says_it_stays_restricted(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    m = manager(clock)
    with caplog.at_level(logging.WARNING, logger="broker_guard.freeze"):
        assert m.unfreeze_symbol("AUT-USD", reason="Issue resolved") is False  # the seed's call
    assert "restricted: it stays untradable" in caplog.text
    assert "trading resumes" not in caplog.text
    m.freeze("AUT-USD", "also frozen")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="broker_guard.freeze"):
        assert m.unfreeze_symbol("AUT-USD", reason="Issue resolved") is True
    assert "AUT/USD is restricted and stays untradable" in caplog.text
    assert "trading resumes" not in caplog.text
    with pytest.raises(SymbolRestrictedError):
        m.check_entry("AUT/USD")


@pytest.mark.parametrize("probe_ok", [True, False], ids=["probe succeeds", "probe fails"])
def test_a_freeze_by_hand_made_while_a_probe_is_in_flight_is_kept(
    clock: FakeClock, probe_ok: bool
) -> None:
    """Review finding: the probe's outcome lifted (success) or replaced with an expiring guard
    record (failure) an open-ended freeze an operator made meanwhile; a buy then filled."""
    from broker_guard import GuardConfig, GuardedBroker

    store = MemoryStore()
    operator = SymbolFreezeManager(FreezePolicy(), store=store, clock=clock, refresh_interval=0.0)

    class Venue:
        probing = False

        def get_current_price(self, symbol: str) -> float:
            if not self.probing:
                raise ValueError("Price not available: symbol delisted")
            operator.freeze("BTC-USD", "do not trade BTC until further notice")  # meanwhile
            if not probe_ok:
                raise ValueError("still delisted")
            return 50_000.0

        def place_order(self, symbol: str, side: str, quantity: float) -> str:
            return "FILLED"

    venue = Venue()
    config = GuardConfig.load(
        env={}, guard={"refresh_interval_seconds": 0.0}, freeze={"cooldown_hours": 1.0}
    )
    guard = GuardedBroker(venue, config, store=store, clock=clock, sleep=clock.sleep)
    fail_price_calls(guard, "BTC-USD")
    clock.advance(2 * 3600)
    venue.probing = True
    try:
        guard.get_current_price("BTC-USD")  # the probe
    except ValueError:
        pass
    record = guard.freeze_manager.get_frozen_symbols()["BTC-USD"]
    assert record.frozen_by != "guard" and record.unfreeze_at is None
    clock.advance(48 * 3600)
    with pytest.raises(SymbolFrozenError):
        guard.place_order("BTC-USD", "buy", 1.0)
